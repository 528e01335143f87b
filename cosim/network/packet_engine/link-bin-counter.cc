/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "link-bin-counter.h"

#include <algorithm>

namespace cosim
{

LinkBinCounter::LinkBinCounter(uint32_t nLinks, uint64_t maxBins, int64_t initialWidthPs)
    : m_maxBins(std::max<uint64_t>(maxBins, 1)),
      m_widthPs(initialWidthPs),
      m_nBins(0),
      m_bins(nLinks)
{
}

int64_t
LinkBinCounter::GetWidthPs() const
{
    return m_widthPs;
}

uint64_t
LinkBinCounter::GetBinCount() const
{
    return std::max<uint64_t>(m_nBins, 1);
}

void
LinkBinCounter::Coarsen()
{
    for (auto& bins : m_bins)
    {
        const size_t merged = (bins.size() + 1) / 2;
        for (size_t i = 0; i < merged; ++i)
        {
            const int64_t second = (2 * i + 1 < bins.size()) ? bins[2 * i + 1] : 0;
            bins[i] = bins[2 * i] + second;
        }
        bins.resize(merged);
    }
    m_nBins = (m_nBins + 1) / 2;
    m_widthPs *= 2;
}

void
LinkBinCounter::Export(std::vector<int64_t>& out) const
{
    const uint64_t nBins = GetBinCount();
    out.assign(m_bins.size() * nBins, 0);
    for (size_t link = 0; link < m_bins.size(); ++link)
    {
        std::copy(m_bins[link].begin(), m_bins[link].end(), out.begin() + link * nBins);
    }
}

} // namespace cosim
