/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim flow solver: per-link byte counts in time bins that widen as the run grows.
 */
#ifndef COSIM_LINK_BINS_H
#define COSIM_LINK_BINS_H

#include <cstdint>
#include <vector>

namespace cosim
{

/**
 * \brief Bytes per link and time bin; the bin width doubles whenever more than maxBins bins would
 * be needed (the rules of cosim.network.results.AdaptiveBins and of the packet engine's bins).
 */
class LinkBins
{
  public:
    LinkBins(int32_t rows, int64_t maxBins, double initialBinS);

    /** Make the bins cover [0, tEnd) (widening them if needed). */
    void Ensure(double tEnd);
    /** Add the bytes of a constant rate (bytes/s) during [t0, t1) to a row. */
    void Add(int32_t row, double t0, double t1, double rateBytesPerS);

    double BinS() const { return m_binS; }
    int64_t Cols() const { return m_cols; }
    int32_t Rows() const { return m_rows; }
    /** Copy the bins into a rows x Cols() row-major array. */
    void CopyTo(double* out) const;

  private:
    void Coarsen();

    int32_t m_rows;
    int64_t m_maxBins;
    double m_binS;
    int64_t m_cols = 0;
    int64_t m_capCols = 0;
    std::vector<double> m_data; //!< rows x m_capCols
};

} // namespace cosim

#endif // COSIM_LINK_BINS_H
