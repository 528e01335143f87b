/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim flow solver: per-link byte counts in time bins that widen as the run grows.
 */
#include "link-bins.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace cosim
{

LinkBins::LinkBins(int32_t rows, int64_t maxBins, double initialBinS)
    : m_rows(rows),
      m_maxBins(maxBins),
      m_binS(initialBinS)
{
    if (maxBins < 1 || !(initialBinS > 0))
    {
        throw std::invalid_argument("max_bins must be >= 1 and the initial bin width > 0");
    }
}

void
LinkBins::Coarsen()
{
    const int64_t cols = (m_cols + 1) / 2;
    for (int32_t r = 0; r < m_rows; ++r)
    {
        double* row = m_data.data() + static_cast<size_t>(r) * m_capCols;
        for (int64_t k = 0; k < cols; ++k)
        {
            const double right = (2 * k + 1 < m_cols) ? row[2 * k + 1] : 0.0;
            row[k] = row[2 * k] + right;
        }
        std::fill(row + cols, row + m_cols, 0.0);
    }
    m_cols = cols;
    m_binS *= 2;
}

void
LinkBins::Ensure(double tEnd)
{
    auto needed = [&] { return static_cast<int64_t>(std::ceil(tEnd / m_binS - 1e-9)); };
    while (needed() > m_maxBins)
    {
        Coarsen();
    }
    const int64_t want = needed();
    if (want <= m_cols)
    {
        return;
    }
    if (want > m_capCols)
    {
        const int64_t cap = std::min(m_maxBins, std::max(want, 2 * m_capCols));
        std::vector<double> data(static_cast<size_t>(m_rows) * cap, 0.0);
        for (int32_t r = 0; r < m_rows; ++r)
        {
            std::copy_n(m_data.data() + static_cast<size_t>(r) * m_capCols, m_cols,
                        data.data() + static_cast<size_t>(r) * cap);
        }
        m_data.swap(data);
        m_capCols = cap;
    }
    m_cols = want;
}

void
LinkBins::Add(int32_t row, double t0, double t1, double rate)
{
    if (!(t1 > t0) || rate == 0.0)
    {
        return;
    }
    const auto b0 = static_cast<int64_t>(std::floor(t0 / m_binS));
    const int64_t b1 = std::min(static_cast<int64_t>(std::ceil(t1 / m_binS - 1e-9)), m_cols);
    double* bins = m_data.data() + static_cast<size_t>(row) * m_capCols;
    for (int64_t b = std::max<int64_t>(b0, 0); b < b1; ++b)
    {
        const double overlap = std::min((b + 1) * m_binS, t1) - std::max(b * m_binS, t0);
        if (overlap > 0)
        {
            bins[b] += rate * overlap;
        }
    }
}

void
LinkBins::CopyTo(double* out) const
{
    for (int32_t r = 0; r < m_rows; ++r)
    {
        std::copy_n(m_data.data() + static_cast<size_t>(r) * m_capCols, m_cols, out + static_cast<size_t>(r) * m_cols);
    }
}

} // namespace cosim
