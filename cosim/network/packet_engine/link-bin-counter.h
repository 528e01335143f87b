/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: adaptive per-link time series of transmitted bytes.
 */
#ifndef COSIM_LINK_BIN_COUNTER_H
#define COSIM_LINK_BIN_COUNTER_H

#include <cstdint>
#include <vector>

namespace cosim
{

/**
 * \ingroup cosim-packet-engine
 * \brief Per-link histogram of wire bytes over time, with a bounded number of bins.
 *
 * All links share one bin width, initially 1 us. When a sample falls beyond the last
 * allowed bin, adjacent bin pairs of every link are merged and the width doubles, until the
 * sample fits (adaptive coarsening). Per-link storage grows only as far as that link has
 * samples.
 */
class LinkBinCounter
{
  public:
    /**
     * \param nLinks number of (directed) links
     * \param maxBins maximum number of bins per link (>= 1)
     * \param initialWidthPs initial bin width in picoseconds
     */
    LinkBinCounter(uint32_t nLinks, uint64_t maxBins, int64_t initialWidthPs);

    /**
     * \brief Add bytes to the bin of a link that contains a time.
     * \param link directed link id
     * \param timePs time in picoseconds (>= 0)
     * \param bytes bytes to add
     */
    void Record(uint32_t link, int64_t timePs, uint64_t bytes)
    {
        uint64_t bin = static_cast<uint64_t>(timePs / m_widthPs);
        while (bin >= m_maxBins)
        {
            Coarsen();
            bin = static_cast<uint64_t>(timePs / m_widthPs);
        }
        std::vector<int64_t>& bins = m_bins[link];
        if (bin >= bins.size())
        {
            bins.resize(bin + 1, 0);
            if (bin >= m_nBins)
            {
                m_nBins = bin + 1;
            }
        }
        bins[bin] += static_cast<int64_t>(bytes);
    }

    /** \return the current bin width in picoseconds */
    int64_t GetWidthPs() const;

    /** \return the number of bins in use (at least 1, at most maxBins) */
    uint64_t GetBinCount() const;

    /**
     * \brief Copy all links into a row-major [nLinks, GetBinCount()] matrix.
     * \param out destination, resized as needed
     */
    void Export(std::vector<int64_t>& out) const;

  private:
    /** \brief Merge adjacent bin pairs of every link and double the width. */
    void Coarsen();

    uint64_t m_maxBins;                      //!< bin budget per link
    int64_t m_widthPs;                       //!< current bin width
    uint64_t m_nBins;                        //!< highest used bin index + 1, over all links
    std::vector<std::vector<int64_t>> m_bins; //!< per-link bins
};

} // namespace cosim

#endif /* COSIM_LINK_BIN_COUNTER_H */
