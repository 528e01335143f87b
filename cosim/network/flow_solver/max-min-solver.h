/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim flow solver: max-min fair rates of flows over capacitated links.
 */
#ifndef COSIM_MAX_MIN_SOLVER_H
#define COSIM_MAX_MIN_SOLVER_H

#include <cstdint>
#include <vector>

namespace cosim
{

/**
 * \brief Max-min fair rates by bottleneck order.
 *
 * Repeatedly takes the link with the smallest fair share (remaining capacity / unfrozen flows),
 * gives that share to its unfrozen flows and removes them from their other links. Fair shares
 * only grow as flows freeze, so a min-heap with lazy re-insertion finds the next bottleneck:
 * O(E log L) for E (flow, link) incidences on L links. The result equals progressive filling.
 */
class MaxMinSolver
{
  public:
    /**
     * \param flowOfEntry flow of every (flow, link) incidence, in [0, numFlows)
     * \param linkOfEntry link of every incidence, in [0, capacity.size())
     * \param numFlows number of flows; every flow needs at least one incidence
     * \param capacity capacity of every link (> 0)
     * Throws std::invalid_argument on inconsistent input.
     */
    MaxMinSolver(const std::vector<int64_t>& flowOfEntry,
                 const std::vector<int64_t>& linkOfEntry,
                 int64_t numFlows,
                 const std::vector<double>& capacity);

    /** \return the max-min fair rate of every flow (capacity units) */
    std::vector<double> Solve() const;

  private:
    int64_t m_numFlows;
    std::vector<double> m_capacity;
    std::vector<int64_t> m_linkStart; //!< CSR: flows of link l are m_linkFlows[m_linkStart[l]..)
    std::vector<int64_t> m_linkFlows;
    std::vector<int64_t> m_flowStart; //!< CSR: links of flow f are m_flowLinks[m_flowStart[f]..)
    std::vector<int64_t> m_flowLinks;
};

} // namespace cosim

#endif // COSIM_MAX_MIN_SOLVER_H
