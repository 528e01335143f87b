/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim flow solver: max-min fair rates of flows over capacitated links.
 */
#include "max-min-solver.h"

#include <functional>
#include <queue>
#include <stdexcept>
#include <string>
#include <utility>

namespace cosim
{

namespace
{

/** Build a CSR index: for each key in [0, numKeys), the values of the entries with that key. */
void
BuildCsr(const std::vector<int64_t>& keys,
         const std::vector<int64_t>& values,
         int64_t numKeys,
         std::vector<int64_t>& start,
         std::vector<int64_t>& items)
{
    start.assign(numKeys + 1, 0);
    for (int64_t k : keys)
    {
        ++start[k + 1];
    }
    for (int64_t i = 0; i < numKeys; ++i)
    {
        start[i + 1] += start[i];
    }
    items.assign(keys.size(), 0);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (size_t e = 0; e < keys.size(); ++e)
    {
        items[fill[keys[e]]++] = values[e];
    }
}

} // namespace

MaxMinSolver::MaxMinSolver(const std::vector<int64_t>& flowOfEntry,
                           const std::vector<int64_t>& linkOfEntry,
                           int64_t numFlows,
                           const std::vector<double>& capacity)
    : m_numFlows(numFlows),
      m_capacity(capacity)
{
    if (flowOfEntry.size() != linkOfEntry.size())
    {
        throw std::invalid_argument("flow_of_entry and link_of_entry differ in length");
    }
    if (numFlows < 0)
    {
        throw std::invalid_argument("num_flows must be >= 0");
    }
    const auto numLinks = static_cast<int64_t>(capacity.size());
    for (size_t e = 0; e < flowOfEntry.size(); ++e)
    {
        if (flowOfEntry[e] < 0 || flowOfEntry[e] >= numFlows)
        {
            throw std::invalid_argument("flow_of_entry[" + std::to_string(e) + "] out of range");
        }
        if (linkOfEntry[e] < 0 || linkOfEntry[e] >= numLinks)
        {
            throw std::invalid_argument("link_of_entry[" + std::to_string(e) + "] out of range");
        }
    }
    for (int64_t l = 0; l < numLinks; ++l)
    {
        if (!(capacity[l] > 0))
        {
            throw std::invalid_argument("capacity[" + std::to_string(l) + "] must be > 0");
        }
    }
    BuildCsr(linkOfEntry, flowOfEntry, numLinks, m_linkStart, m_linkFlows);
    BuildCsr(flowOfEntry, linkOfEntry, numFlows, m_flowStart, m_flowLinks);
    for (int64_t f = 0; f < numFlows; ++f)
    {
        if (m_flowStart[f + 1] == m_flowStart[f])
        {
            throw std::invalid_argument("flow " + std::to_string(f) + " crosses no link");
        }
    }
}

std::vector<double>
MaxMinSolver::Solve() const
{
    const auto numLinks = static_cast<int64_t>(m_capacity.size());
    std::vector<double> remaining(m_capacity);
    std::vector<int64_t> count(numLinks);
    for (int64_t l = 0; l < numLinks; ++l)
    {
        count[l] = m_linkStart[l + 1] - m_linkStart[l];
    }
    using Entry = std::pair<double, int64_t>;
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    for (int64_t l = 0; l < numLinks; ++l)
    {
        if (count[l] > 0)
        {
            heap.emplace(remaining[l] / count[l], l);
        }
    }
    std::vector<double> rate(m_numFlows, 0.0);
    std::vector<char> frozen(m_numFlows, 0);
    while (!heap.empty())
    {
        const auto [stored, l] = heap.top();
        heap.pop();
        if (count[l] == 0)
        {
            continue;
        }
        const double share = remaining[l] / count[l];
        if (share > stored)
        {
            heap.emplace(share, l); // shares only grow: re-insert at the current value
            continue;
        }
        for (int64_t i = m_linkStart[l]; i < m_linkStart[l + 1]; ++i)
        {
            const int64_t f = m_linkFlows[i];
            if (frozen[f])
            {
                continue;
            }
            frozen[f] = 1;
            rate[f] = share;
            for (int64_t j = m_flowStart[f]; j < m_flowStart[f + 1]; ++j)
            {
                const int64_t m = m_flowLinks[j];
                remaining[m] -= share;
                --count[m];
            }
        }
        count[l] = 0;
        remaining[l] = 0.0;
    }
    return rate;
}

} // namespace cosim
