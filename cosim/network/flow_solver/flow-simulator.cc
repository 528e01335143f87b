/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim flow solver: the event loop of the flow-level backend (max-min fair fluid flows).
 */
#include "flow-simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace cosim
{

namespace
{

constexpr double kRelEps = 1e-9; //!< cosim.network.flow_backend._REL_EPS
constexpr double kInf = std::numeric_limits<double>::infinity();
//! An incremental solve gives way to a full one when it would re-solve more than this share.
constexpr double kFullSolveShare = 0.5;
//! A full solve over at least this many flows keeps their drain times as a sorted run.
constexpr size_t kSortedRunFlows = size_t(1) << 20;

bool
ArrivalAfter(const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b)
{
    return a > b; // min-heap on (time, flow)
}

} // namespace

FlowSimulator::FlowSimulator(const FlowInput& input, int64_t maxBins, double initialBinS, bool incremental,
                             double timeTolerance)
    : m_in(input),
      m_incremental(incremental),
      m_timeTolerance(timeTolerance),
      m_bins(0, maxBins, initialBinS)
{
    const int64_t n = m_in.numFlows;
    if (n < 0 || n >= std::numeric_limits<int32_t>::max())
    {
        throw std::invalid_argument("number of flows out of range");
    }
    if (m_in.routeOffsets[0] != 0 || m_in.depOffsets[0] != 0)
    {
        throw std::invalid_argument("route and dependency offsets must start at 0");
    }
    for (int64_t f = 0; f < n; ++f)
    {
        const int64_t r0 = m_in.routeOffsets[f];
        const int64_t r1 = m_in.routeOffsets[f + 1];
        if (r1 < r0 || m_in.depOffsets[f + 1] < m_in.depOffsets[f])
        {
            throw std::invalid_argument("flow " + std::to_string(f) + ": offsets must not decrease");
        }
        if (r1 == r0 && m_in.sizeBytes[f] > 0)
        {
            throw std::invalid_argument("flow " + std::to_string(f) + " has bytes but crosses no link");
        }
        for (int64_t e = r0; e < r1; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            if (l < 0 || l >= m_in.numLinks || !(m_in.capacityBps[l] > 0))
            {
                throw std::invalid_argument("flow " + std::to_string(f) + ": link " + std::to_string(l) +
                                            " out of range or without capacity");
            }
        }
        for (int64_t k = m_in.depOffsets[f]; k < m_in.depOffsets[f + 1]; ++k)
        {
            const int64_t d = m_in.depFlows[k] >= 0 ? m_in.depFlows[k] : -static_cast<int64_t>(m_in.depFlows[k]) - 1;
            if (d >= n)
            {
                throw std::invalid_argument("flow " + std::to_string(f) + ": dependency out of range");
            }
        }
    }
    if (m_in.routeOffsets[n] >= static_cast<int64_t>(std::numeric_limits<uint32_t>::max()))
    {
        throw std::invalid_argument("too many (flow, link) entries");
    }
    BuildLinkSlots();
    BuildDependents();
    m_bins = LinkBins(static_cast<int32_t>(m_usedLinks.size()), maxBins, initialBinS);
    m_state.assign(n, kWaiting);
    m_rate.assign(n, 0.0);
    m_rem.assign(n, 0.0);
    m_tUpd.assign(n, 0.0);
    m_bottleneck.assign(n, -1);
    m_version.assign(n, 0);
    m_activePos.assign(n, -1);
}

double
FlowSimulator::Latency(int64_t f) const
{
    // Same arithmetic, in the same order, as flow_backend._path_latency_s.
    const int64_t payload = std::min<int64_t>(m_in.payloadBytes[f], m_in.sizeBytes[f]);
    const double frameBits = static_cast<double>(payload + m_in.headerBytes) * 8.0;
    double sum = 0.0;
    double slowest = 0.0;
    for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
    {
        const int32_t l = m_in.routeLinks[e];
        const double ser = frameBits / m_in.linkBandwidthBps[l];
        sum += m_in.linkLatencyS[l] + ser;
        slowest = std::max(slowest, ser);
    }
    return sum - slowest;
}

void
FlowSimulator::BuildLinkSlots()
{
    const int32_t numLinks = m_in.numLinks;
    const int64_t entries = m_in.routeOffsets[m_in.numFlows];
    m_slotStart.assign(numLinks + 1, 0);
    for (int64_t e = 0; e < entries; ++e)
    {
        ++m_slotStart[m_in.routeLinks[e] + 1];
    }
    m_row.assign(numLinks, -1);
    for (int32_t l = 0; l < numLinks; ++l)
    {
        if (m_slotStart[l + 1] > 0)
        {
            m_row[l] = static_cast<int32_t>(m_usedLinks.size());
            m_usedLinks.push_back(l);
        }
        m_slotStart[l + 1] += m_slotStart[l];
    }
    m_slotFlow.assign(entries, -1);
    m_count.assign(numLinks, 0);
    m_slotLen.assign(numLinks, 0);
    m_load.assign(numLinks, 0.0);
    m_flushedAt.assign(numLinks, 0.0);
    m_linkMark.assign(numLinks, 0);
    m_res.assign(numLinks, 0.0);
    m_cnt.assign(numLinks, 0);
    m_subStart.assign(numLinks, 0);
    m_subLen.assign(numLinks, 0);
    m_subLinkEpoch.assign(numLinks, 0);
}

void
FlowSimulator::BuildDependents()
{
    const int64_t n = m_in.numFlows;
    if (m_in.depOffsets[n] > 0)
    {
        m_waiting.assign(n, 0);
        m_readyAt.assign(m_in.earliestStartS, m_in.earliestStartS + n);
        m_recvStart.assign(n + 1, 0);
        m_sentStart.assign(n + 1, 0);
        for (int64_t f = 0; f < n; ++f)
        {
            m_waiting[f] = static_cast<int32_t>(m_in.depOffsets[f + 1] - m_in.depOffsets[f]);
            for (int64_t k = m_in.depOffsets[f]; k < m_in.depOffsets[f + 1]; ++k)
            {
                const int32_t d = m_in.depFlows[k];
                if (d >= 0)
                {
                    ++m_recvStart[d + 1];
                }
                else
                {
                    ++m_sentStart[-static_cast<int64_t>(d)];
                }
            }
        }
        for (int64_t f = 0; f < n; ++f)
        {
            m_recvStart[f + 1] += m_recvStart[f];
            m_sentStart[f + 1] += m_sentStart[f];
        }
        m_recvItems.assign(m_recvStart[n], 0);
        m_sentItems.assign(m_sentStart[n], 0);
        std::vector<int64_t> recvFill(m_recvStart.begin(), m_recvStart.end() - 1);
        std::vector<int64_t> sentFill(m_sentStart.begin(), m_sentStart.end() - 1);
        for (int64_t f = 0; f < n; ++f)
        {
            for (int64_t k = m_in.depOffsets[f]; k < m_in.depOffsets[f + 1]; ++k)
            {
                const int32_t d = m_in.depFlows[k];
                if (d >= 0)
                {
                    m_recvItems[recvFill[d]++] = static_cast<int32_t>(f);
                }
                else
                {
                    m_sentItems[sentFill[-static_cast<int64_t>(d) - 1]++] = static_cast<int32_t>(f);
                }
            }
        }
    }
    for (int64_t f = 0; f < n; ++f)
    {
        if (m_waiting.empty() || m_waiting[f] == 0)
        {
            m_roots.push_back(static_cast<int32_t>(f));
        }
    }
    auto earlier = [&](int32_t a, int32_t b) { return m_in.earliestStartS[a] < m_in.earliestStartS[b]; };
    if (!std::is_sorted(m_roots.begin(), m_roots.end(), earlier))
    {
        std::stable_sort(m_roots.begin(), m_roots.end(), earlier);
    }
}

bool
FlowSimulator::HasDependents(int64_t f) const
{
    return (!m_recvStart.empty() && m_recvStart[f + 1] > m_recvStart[f]) ||
           (!m_sentStart.empty() && m_sentStart[f + 1] > m_sentStart[f]);
}

// ------------------------------------------------------------------------------------- links

void
FlowSimulator::SetLinkLoad(int32_t l, double load, double t)
{
    if (m_flushedAt[l] < t)
    {
        m_bins.Add(m_row[l], m_flushedAt[l], t, m_load[l]);
        m_flushedAt[l] = t;
    }
    m_load[l] = load;
}

void
FlowSimulator::Activate(int64_t f, double t)
{
    m_state[f] = kActive;
    m_rem[f] = static_cast<double>(m_in.wireBytes[f]);
    m_tUpd[f] = t;
    m_rate[f] = 0.0;
    m_bottleneck[f] = -1;
    m_activePos[f] = static_cast<int32_t>(m_active.size());
    m_active.push_back(static_cast<int32_t>(f));
    for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
    {
        const int32_t l = m_in.routeLinks[e];
        ++m_count[l];
        m_slotFlow[m_slotStart[l] + m_slotLen[l]++] = static_cast<int32_t>(f);
    }
    m_liveSlots += m_in.routeOffsets[f + 1] - m_in.routeOffsets[f];
}

void
FlowSimulator::Deactivate(int64_t f, double t)
{
    // The flow's slots in its links' lists stay, dead, until a full solve compacts the lists:
    // removing them one by one costs a random look-up per link, which dominated runs of millions
    // of flows. A link whose last flow left starts its list afresh.
    const int64_t hops = m_in.routeOffsets[f + 1] - m_in.routeOffsets[f];
    for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
    {
        const int32_t l = m_in.routeLinks[e];
        const int32_t left = --m_count[l];
        SetLinkLoad(l, left == 0 ? 0.0 : m_load[l] - m_rate[f], t);
        if (left == 0)
        {
            m_deadSlots -= m_slotLen[l] - 1; // the link's dead slots, this one included, are gone
            m_slotLen[l] = 0;
        }
        else
        {
            ++m_deadSlots;
        }
    }
    m_liveSlots -= hops;
    m_state[f] = kDone;
    m_rem[f] = 0.0;
    ++m_version[f];
    const int32_t p = m_activePos[f];
    const int32_t moved = m_active.back();
    m_active[p] = moved;
    m_activePos[moved] = p;
    m_active.pop_back();
    m_activePos[f] = -1;
}

void
FlowSimulator::CompactSlots()
{
    // Rebuild every link's list from the active flows (a full solve does, when the lists hold
    // more dead slots than live ones: it walks them).
    for (const int32_t l : m_usedLinks)
    {
        m_slotLen[l] = 0;
    }
    for (const int32_t f : m_active)
    {
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            m_slotFlow[m_slotStart[l] + m_slotLen[l]++] = f;
        }
    }
    m_deadSlots = 0;
}

void
FlowSimulator::DeactivateAll(const std::vector<int32_t>& flows, double t)
{
    // Many flows leave at once: flush the bins, drop the flows and rebuild every link's list of
    // active flows and load from the flows that stay (cheaper than removing entries one by one).
    for (const int32_t l : m_usedLinks)
    {
        SetLinkLoad(l, 0.0, t);
        m_count[l] = 0;
        m_slotLen[l] = 0;
    }
    m_liveSlots = 0;
    m_deadSlots = 0;
    for (const int32_t f : flows)
    {
        m_state[f] = kDone;
        m_rem[f] = 0.0;
        ++m_version[f];
        m_activePos[f] = -1;
    }
    size_t kept = 0;
    for (const int32_t f : m_active)
    {
        if (m_state[f] != kActive)
        {
            continue;
        }
        m_activePos[f] = static_cast<int32_t>(kept);
        m_active[kept++] = f;
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            ++m_count[l];
            m_slotFlow[m_slotStart[l] + m_slotLen[l]++] = f;
            m_load[l] += m_rate[f];
        }
        m_liveSlots += m_in.routeOffsets[f + 1] - m_in.routeOffsets[f];
    }
    m_active.resize(kept);
}

bool
FlowSimulator::NextFinish(FinishEntry& entry) const
{
    // The earliest of the sorted run and the heap (stale entries are skipped by PopFinish).
    const bool sorted = m_nextSorted < m_finishSorted.size();
    const bool heap = !m_finishHeap.empty();
    if (!sorted && !heap)
    {
        return false;
    }
    if (sorted && (!heap || m_finishSorted[m_nextSorted].time <= m_finishHeap.front().time))
    {
        entry = m_finishSorted[m_nextSorted];
    }
    else
    {
        entry = m_finishHeap.front();
    }
    return true;
}

void
FlowSimulator::PopFinish()
{
    const bool sorted = m_nextSorted < m_finishSorted.size();
    if (sorted && (m_finishHeap.empty() || m_finishSorted[m_nextSorted].time <= m_finishHeap.front().time))
    {
        ++m_nextSorted;
        if (m_nextSorted == m_finishSorted.size())
        {
            m_finishSorted.clear();
            m_finishSorted.shrink_to_fit();
            m_nextSorted = 0;
        }
        return;
    }
    std::pop_heap(m_finishHeap.begin(), m_finishHeap.end(),
                  [](const FinishEntry& a, const FinishEntry& b) { return a.time > b.time; });
    m_finishHeap.pop_back();
}

void
FlowSimulator::EnsureScratch()
{
    if (m_frozen.empty())
    {
        m_frozen.assign(m_in.numFlows, 0);
    }
}

void
FlowSimulator::Settle(int64_t f, double t)
{
    if (m_rate[f] > 0 && t > m_tUpd[f])
    {
        m_rem[f] = std::max(0.0, m_rem[f] - m_rate[f] * (t - m_tUpd[f]));
    }
    m_tUpd[f] = t;
}

void
FlowSimulator::PushFinish(int64_t f)
{
    const uint32_t v = ++m_version[f];
    if (m_rate[f] > 0)
    {
        m_finishHeap.push_back({m_tUpd[f] + m_rem[f] / m_rate[f], static_cast<int32_t>(f), v});
        std::push_heap(m_finishHeap.begin(), m_finishHeap.end(),
                       [](const FinishEntry& a, const FinishEntry& b) { return a.time > b.time; });
    }
}

// ------------------------------------------------------------------------------------- rates

void
FlowSimulator::BuildSubCsr(const std::vector<int32_t>& flows)
{
    // m_touched: the links of `flows`; the flows on link l: m_subFlows[m_subStart[l]..+m_subLen[l])
    ++m_linkEpoch;
    ++m_subEpoch;
    m_touched.clear();
    for (const int32_t f : flows)
    {
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            if (m_linkMark[l] != m_linkEpoch)
            {
                m_linkMark[l] = m_linkEpoch;
                m_subLinkEpoch[l] = m_subEpoch;
                m_touched.push_back(l);
                m_subLen[l] = 0;
            }
            ++m_subLen[l];
        }
    }
    int64_t total = 0;
    for (const int32_t l : m_touched)
    {
        m_subStart[l] = total;
        total += m_subLen[l];
        m_cnt[l] = 0;
    }
    m_subFlows.resize(total);
    for (const int32_t f : flows)
    {
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            m_subFlows[m_subStart[l] + m_cnt[l]++] = static_cast<int32_t>(f);
        }
    }
}

void
FlowSimulator::ResidualSolve(const std::vector<int32_t>& flows, bool haveCsr)
{
    // Max-min rates of `flows` on the capacity the other active flows leave (m_load holds only
    // theirs), by bottleneck order: the link with the smallest fair share freezes its flows.
    // Fair shares only grow as flows freeze, so a min-heap with lazy re-insertion finds the next
    // bottleneck (the algorithm of MaxMinSolver).
    if (!haveCsr)
    {
        BuildSubCsr(flows);
    }
    for (const int32_t l : m_touched)
    {
        m_cnt[l] = m_subLen[l];
    }
    using Entry = std::pair<double, int32_t>;
    std::vector<Entry> heap;
    heap.reserve(m_touched.size());
    for (const int32_t l : m_touched)
    {
        m_res[l] = std::max(0.0, m_in.capacityBps[l] - m_load[l]);
        heap.emplace_back(m_res[l] / m_cnt[l], l);
    }
    auto greater = [](const Entry& a, const Entry& b) { return a > b; };
    std::make_heap(heap.begin(), heap.end(), greater);
    const uint32_t epoch = ++m_frozenEpoch;
    while (!heap.empty())
    {
        std::pop_heap(heap.begin(), heap.end(), greater);
        const auto [stored, l] = heap.back();
        heap.pop_back();
        if (m_cnt[l] == 0)
        {
            continue;
        }
        const double share = m_res[l] / m_cnt[l];
        if (share > stored)
        {
            heap.emplace_back(share, l); // shares only grow: re-insert at the current value
            std::push_heap(heap.begin(), heap.end(), greater);
            continue;
        }
        for (int64_t i = m_subStart[l]; i < m_subStart[l] + m_subLen[l]; ++i)
        {
            const int32_t f = m_subFlows[i];
            if (m_frozen[f] == epoch)
            {
                continue;
            }
            m_frozen[f] = epoch;
            m_rate[f] = share;
            m_bottleneck[f] = l;
            for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
            {
                const int32_t m = m_in.routeLinks[e];
                m_res[m] -= share;
                --m_cnt[m];
            }
        }
        m_cnt[l] = 0;
        m_res[l] = 0.0;
    }
}

void
FlowSimulator::Unload(const std::vector<int32_t>& flows, double t)
{
    for (const int32_t f : flows)
    {
        Settle(f, t);
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            SetLinkLoad(l, m_load[l] - m_rate[f], t);
        }
        m_rate[f] = 0.0;
    }
}

void
FlowSimulator::Reload(const std::vector<int32_t>& flows)
{
    for (const int32_t f : flows)
    {
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            m_load[l] += m_rate[f];
        }
    }
}

void
FlowSimulator::RestrictToChange()
{
    // The re-solved flows' problem (water-filling on the capacity the kept flows leave) splits
    // into connected components of flows sharing links; a component that no finished or new
    // flow touches has the same problem as before the change, so its rates stay. Keep the
    // components reached from the links of the flows that finished or started.
    BuildSubCsr(m_set);
    const uint32_t flowEpoch = ++m_frozenEpoch;
    const uint32_t linkEpoch = ++m_linkEpoch;
    std::vector<int32_t>& stack = m_touched;
    stack.clear();
    auto pushLinks = [&](int32_t f) {
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            if (m_linkMark[l] != linkEpoch)
            {
                m_linkMark[l] = linkEpoch;
                stack.push_back(l);
            }
        }
    };
    for (const int32_t f : m_departed)
    {
        pushLinks(f);
    }
    for (const int32_t f : m_admitted)
    {
        pushLinks(f);
    }
    const auto before = m_set.size();
    m_component.clear();
    m_componentLinks.clear();
    while (!stack.empty())
    {
        const int32_t l = stack.back();
        stack.pop_back();
        if (m_subLinkEpoch[l] != m_subEpoch)
        {
            continue; // no re-solved flow on this link
        }
        m_componentLinks.push_back(l);
        for (int64_t i = m_subStart[l]; i < m_subStart[l] + m_subLen[l]; ++i)
        {
            const int32_t f = m_subFlows[i];
            if (m_frozen[f] != flowEpoch)
            {
                m_frozen[f] = flowEpoch;
                m_component.push_back(f);
                pushLinks(f);
            }
        }
    }
    m_set.swap(m_component);
    m_touched.swap(m_componentLinks); // the CSR of these links holds exactly the component's flows
    m_stats.skippedFlows += static_cast<int64_t>(before - m_set.size());
}

void
FlowSimulator::SortByRate(size_t from)
{
    // m_byRate[from..) in rising order of rate (often already so: a full solve emits that order
    // as it freezes bottlenecks); if rounding put it below the kept prefix, everything.
    auto slower = [this](int32_t a, int32_t b) { return m_rate[a] < m_rate[b]; };
    const auto first = m_byRate.begin() + static_cast<std::ptrdiff_t>(from);
    if (!std::is_sorted(first, m_byRate.end(), slower))
    {
        std::sort(first, m_byRate.end(), slower);
    }
    if (from > 0 && from < m_byRate.size() && m_rate[m_byRate[from]] < m_rate[m_byRate[from - 1]])
    {
        std::sort(m_byRate.begin(), m_byRate.end(), slower);
    }
}

bool
FlowSimulator::IncrementalSolve(double t)
{
    // Water-filling below the level L0 is the same before and after the change, so the flows
    // slower than L0 keep their rates exactly: L0 is the smallest rate of a flow that left (no
    // link on its route saturated below its rate) and, for a flow that arrived, the smallest
    // fair share cap / flows over its links (no link on its route can saturate below it). The
    // other flows are re-solved by water-filling on the capacity the kept flows leave.
    double level = kInf;
    for (const int32_t f : m_departed)
    {
        level = std::min(level, m_rate[f]);
    }
    for (const int32_t f : m_admitted)
    {
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            const int32_t l = m_in.routeLinks[e];
            level = std::min(level, m_in.capacityBps[l] / m_count[l]);
        }
    }
    const double keepBelow = level * (1 - kRelEps);
    const auto limit = static_cast<size_t>(kFullSolveShare * static_cast<double>(m_active.size()));
    // The flows at or above the level: a suffix of the active flows sorted by rate. The flows
    // that left are in it (the level is at most their rates); the re-solved flows' new rates are
    // at or above the level, so the suffix stays one (the first solve is a full one: it exists).
    const auto cut = std::lower_bound(m_byRate.begin(), m_byRate.end(), keepBelow,
                                      [this](int32_t f, double r) { return m_rate[f] < r; });
    const auto from = static_cast<size_t>(cut - m_byRate.begin());
    m_set.assign(m_admitted.begin(), m_admitted.end());
    for (size_t i = from; i < m_byRate.size(); ++i)
    {
        const int32_t f = m_byRate[i];
        if (m_state[f] == kActive)
        {
            m_set.push_back(f);
            if (m_set.size() > limit)
            {
                return false; // a full solve is cheaper (and rebuilds the order)
            }
        }
    }
    m_levelSet.assign(m_set.begin(), m_set.end());
    EnsureScratch();
    RestrictToChange();
    m_oldRate.resize(m_set.size());
    for (size_t i = 0; i < m_set.size(); ++i)
    {
        m_oldRate[i] = m_rate[m_set[i]];
    }
    Unload(m_set, t);
    ResidualSolve(m_set, true);
    for (size_t i = 0; i < m_set.size(); ++i)
    {
        // a rate that did not change (up to rounding) keeps its value and its projected drain
        const int32_t f = m_set[i];
        if (std::abs(m_rate[f] - m_oldRate[i]) <= 1e-12 * m_oldRate[i])
        {
            m_rate[f] = m_oldRate[i];
        }
        else
        {
            PushFinish(f);
            ++m_stats.changedFlows;
        }
    }
    Reload(m_set);
    m_byRate.resize(from); // the suffix again: the level set (arrivals included) at its rates now
    m_byRate.insert(m_byRate.end(), m_levelSet.begin(), m_levelSet.end());
    SortByRate(from);
    ++m_stats.incrementalSolves;
    m_stats.resolvedFlows += static_cast<int64_t>(m_set.size());
    m_stats.incrementalResolved += static_cast<int64_t>(m_set.size());
    return true;
}

void
FlowSimulator::FullSolve(double t)
{
    // Max-min rates of every active flow by bottleneck order over the links' lists of active
    // flows (the algorithm of MaxMinSolver); a negative rate marks a flow not yet frozen.
    if (m_deadSlots > m_liveSlots)
    {
        CompactSlots();
    }
    for (const int32_t f : m_active)
    {
        Settle(f, t);
        m_rate[f] = -1.0;
    }
    using Entry = std::pair<double, int32_t>;
    std::vector<Entry> heap;
    m_byRate.clear();
    for (const int32_t l : m_usedLinks)
    {
        SetLinkLoad(l, 0.0, t);
        if (m_count[l] > 0)
        {
            m_res[l] = m_in.capacityBps[l];
            m_cnt[l] = m_count[l];
            heap.emplace_back(m_res[l] / m_cnt[l], l);
        }
    }
    auto greater = [](const Entry& a, const Entry& b) { return a > b; };
    std::make_heap(heap.begin(), heap.end(), greater);
    while (!heap.empty())
    {
        std::pop_heap(heap.begin(), heap.end(), greater);
        const auto [stored, l] = heap.back();
        heap.pop_back();
        if (m_cnt[l] == 0)
        {
            continue;
        }
        const double share = m_res[l] / m_cnt[l];
        if (share > stored)
        {
            heap.emplace_back(share, l);
            std::push_heap(heap.begin(), heap.end(), greater);
            continue;
        }
        const int32_t* slots = m_slotFlow.data() + m_slotStart[l];
        for (int32_t i = 0; i < m_slotLen[l]; ++i)
        {
            const int32_t f = slots[i];
            if (m_rate[f] >= 0) // frozen, or a dead slot (a departed flow keeps its last rate >= 0)
            {
                continue;
            }
            m_rate[f] = share;
            m_bottleneck[f] = l;
            m_byRate.push_back(f); // bottlenecks come in rising order of their shares
            for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
            {
                const int32_t m = m_in.routeLinks[e];
                m_res[m] -= share;
                --m_cnt[m];
            }
        }
        m_cnt[l] = 0;
        m_res[l] = 0.0;
    }
    SortByRate(0);
    for (const int32_t f : m_active)
    {
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            m_load[m_in.routeLinks[e]] += m_rate[f]; // 0 after SetLinkLoad above
        }
    }
    // Every projected drain time changes: rebuild the heap; for very many flows (which then tend to
    // drain in large groups) a sorted run, popped in O(1).
    m_finishHeap.clear();
    m_finishSorted.clear();
    m_nextSorted = 0;
    auto& entries = m_active.size() >= kSortedRunFlows ? m_finishSorted : m_finishHeap;
    entries.reserve(m_active.size());
    for (const int32_t f : m_active)
    {
        const uint32_t v = ++m_version[f];
        if (m_rate[f] > 0)
        {
            entries.push_back({m_tUpd[f] + m_rem[f] / m_rate[f], f, v});
        }
    }
    if (&entries == &m_finishSorted)
    {
        std::sort(entries.begin(), entries.end(),
                  [](const FinishEntry& a, const FinishEntry& b) { return a.time < b.time; });
    }
    else
    {
        std::make_heap(entries.begin(), entries.end(),
                       [](const FinishEntry& a, const FinishEntry& b) { return a.time > b.time; });
    }
    ++m_stats.fullSolves;
    m_stats.resolvedFlows += static_cast<int64_t>(m_active.size());
}

void
FlowSimulator::Solve(double t)
{
    ++m_stats.rateUpdates;
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    const bool incremental = m_incremental && m_solvedOnce && IncrementalSolve(t);
    const auto t1 = Clock::now();
    if (!incremental)
    {
        if (m_admitted.size() > 4096)
        {
            std::vector<int32_t>().swap(m_admitted); // not needed by a full solve
        }
        FullSolve(t);
        m_stats.fullSolveS += std::chrono::duration<double>(Clock::now() - t1).count();
    }
    m_stats.incrementalSolveS += std::chrono::duration<double>(t1 - t0).count();
    m_solvedOnce = true;
    m_admitted.clear();
    m_departed.clear();
    m_dirty = false;
    // Drop stale heap entries once they dominate.
    if (m_finishHeap.size() + m_finishSorted.size() - m_nextSorted > 4 * m_active.size() + 1024)
    {
        std::vector<FinishEntry> live;
        live.reserve(m_active.size());
        auto keep = [&](const FinishEntry& entry) {
            if (entry.version == m_version[entry.flow] && m_state[entry.flow] == kActive)
            {
                live.push_back(entry);
            }
        };
        std::for_each(m_finishHeap.begin(), m_finishHeap.end(), keep);
        std::for_each(m_finishSorted.begin() + static_cast<std::ptrdiff_t>(m_nextSorted), m_finishSorted.end(), keep);
        m_finishSorted.clear();
        m_nextSorted = 0;
        m_finishHeap.swap(live);
        std::make_heap(m_finishHeap.begin(), m_finishHeap.end(),
                       [](const FinishEntry& a, const FinishEntry& b) { return a.time > b.time; });
    }
}

// ------------------------------------------------------------------------------------- events

bool
FlowSimulator::HasArrival() const
{
    return m_nextRoot < m_roots.size() || !m_released.empty();
}

std::pair<double, int64_t>
FlowSimulator::NextArrival() const
{
    std::pair<double, int64_t> best{kInf, std::numeric_limits<int64_t>::max()};
    if (m_nextRoot < m_roots.size())
    {
        const int32_t f = m_roots[m_nextRoot];
        best = {m_in.earliestStartS[f], f};
    }
    if (!m_released.empty())
    {
        const std::pair<double, int64_t> r{m_released.front().first, m_released.front().second};
        if (r < best)
        {
            best = r;
        }
    }
    return best;
}

void
FlowSimulator::PopArrival()
{
    if (!m_released.empty() &&
        (m_nextRoot >= m_roots.size() ||
         m_released.front() < std::pair<double, int32_t>{m_in.earliestStartS[m_roots[m_nextRoot]], m_roots[m_nextRoot]}))
    {
        std::pop_heap(m_released.begin(), m_released.end(), ArrivalAfter);
        m_released.pop_back();
    }
    else if (++m_nextRoot == m_roots.size())
    {
        m_roots.clear();
        m_roots.shrink_to_fit(); // all roots admitted
        m_nextRoot = 0;
    }
}

void
FlowSimulator::Release(const std::vector<int64_t>& start, const std::vector<int32_t>& items, int64_t f, double when)
{
    if (start.empty())
    {
        return;
    }
    for (int64_t i = start[f]; i < start[f + 1]; ++i)
    {
        const int32_t g = items[i];
        if (when > m_readyAt[g])
        {
            m_readyAt[g] = when;
        }
        if (--m_waiting[g] == 0)
        {
            m_released.emplace_back(m_readyAt[g], g);
            std::push_heap(m_released.begin(), m_released.end(), ArrivalAfter);
        }
    }
}

bool
FlowSimulator::Run(double* startS, double* finishS, int64_t* txBytes, int64_t* txPackets, const Progress& progress,
                   double progressIntervalS)
{
    const int64_t n = m_in.numFlows;
    std::fill(startS, startS + n, std::numeric_limits<double>::quiet_NaN());
    std::fill(finishS, finishS + n, std::numeric_limits<double>::quiet_NaN());
    std::fill(txBytes, txBytes + m_in.numLinks, 0);
    std::fill(txPackets, txPackets + m_in.numLinks, 0);
    for (int64_t f = 0; f < n; ++f)
    {
        for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
        {
            txBytes[m_in.routeLinks[e]] += m_in.wireBytes[f];
            txPackets[m_in.routeLinks[e]] += m_in.numPackets[f];
        }
    }
    using Clock = std::chrono::steady_clock;
    auto lastReport = Clock::now();
    double t = 0.0;
    int64_t done = 0;
    while (HasArrival() || !m_active.empty())
    {
        // Admit every flow whose start time has come.
        while (HasArrival() && NextArrival().first <= t * (1 + kRelEps) + 1e-18)
        {
            const auto [when, f] = NextArrival();
            PopArrival();
            startS[f] = std::max(when, t); // (later than `when` only under a time tolerance)
            if (m_in.sizeBytes[f] == 0)
            {
                finishS[f] = when;
                m_state[f] = kDone;
                ++done;
                Release(m_sentStart, m_sentItems, f, when);
                Release(m_recvStart, m_recvItems, f, when);
            }
            else
            {
                Activate(f, t);
                m_admitted.push_back(f);
                m_dirty = true;
            }
        }
        if (m_active.empty())
        {
            if (HasArrival())
            {
                t = NextArrival().first;
            }
            continue;
        }
        if (m_dirty)
        {
            Solve(t);
        }
        FinishEntry next{};
        auto live = [&](const FinishEntry& e) { return e.version == m_version[e.flow] && m_state[e.flow] == kActive; };
        while (NextFinish(next) && !live(next))
        {
            PopFinish();
        }
        double dt = NextFinish(next) ? next.time - t : kInf;
        if (HasArrival())
        {
            dt = std::min(dt, NextArrival().first - t);
        }
        if (!std::isfinite(dt))
        {
            throw std::runtime_error("flow simulation stalled: active flows without a rate");
        }
        dt = std::max(dt, 0.0);
        ++m_stats.events;
        if (dt > 0)
        {
            m_bins.Ensure(t + dt);
        }
        double limit = dt * (1 + kRelEps) + 1e-15;
        const bool window = m_timeTolerance > 0;
        if (window)
        {
            // Opt-in: also the drains within timeTolerance x (t + dt), up to the next arrival.
            double widened = (t + dt) * (1 + m_timeTolerance) - t;
            if (HasArrival())
            {
                widened = std::min(widened, NextArrival().first - t);
            }
            limit = std::max(limit, widened);
            m_departedAt.clear();
        }
        double tEnd = t + dt;
        while (NextFinish(next))
        {
            const bool ok = live(next);
            if (ok && next.time - t > limit)
            {
                break;
            }
            if (window && ok && next.time > tEnd && HasDependents(next.flow))
            {
                break; // a window never delays the release of dependent flows
            }
            PopFinish();
            if (ok)
            {
                m_departed.push_back(next.flow);
                if (window)
                {
                    // drains at its projected time (at least the event's), in order
                    const double at = std::max(next.time, tEnd);
                    m_departedAt.push_back(at);
                }
            }
        }
        if (window && !m_departedAt.empty() && m_departedAt.back() > tEnd)
        {
            m_stats.coalescedFlows += static_cast<int64_t>(m_departed.size());
            m_bins.Ensure(m_departedAt.back());
            // Each flow drains at its own time (the rates in force until the re-solve at the
            // last one): the links' bins hold its bytes up to that time.
            const bool bulk = m_departed.size() > m_active.size() / 4 + 64;
            for (size_t i = 0; i < m_departed.size(); ++i)
            {
                const int32_t f = m_departed[i];
                if (bulk)
                {
                    // the links' loads drop at the flow's own time; the lists are rebuilt below
                    for (int64_t e = m_in.routeOffsets[f]; e < m_in.routeOffsets[f + 1]; ++e)
                    {
                        const int32_t l = m_in.routeLinks[e];
                        SetLinkLoad(l, m_load[l] - m_rate[f], m_departedAt[i]);
                    }
                }
                else
                {
                    Deactivate(f, m_departedAt[i]);
                }
                finishS[f] = m_departedAt[i] + Latency(f);
                ++done;
            }
            t = m_departedAt.back();
            if (bulk)
            {
                DeactivateAll(m_departed, t);
            }
            for (size_t i = 0; i < m_departed.size(); ++i)
            {
                const int32_t f = m_departed[i];
                Release(m_sentStart, m_sentItems, f, m_departedAt[i]);
                Release(m_recvStart, m_recvItems, f, finishS[f]);
            }
            m_dirty = true;
            if (progress && (done == n || Clock::now() - lastReport >= std::chrono::duration<double>(progressIntervalS)))
            {
                lastReport = Clock::now();
                if (!progress(done, t))
                {
                    return false;
                }
            }
            continue;
        }
        t += dt;
        if (m_departed.size() > m_active.size() / 4 + 64)
        {
            DeactivateAll(m_departed, t);
        }
        else
        {
            for (const int32_t f : m_departed)
            {
                Deactivate(f, t);
            }
        }
        for (const int32_t f : m_departed)
        {
            finishS[f] = t + Latency(f);
            ++done;
        }
        for (const int32_t f : m_departed)
        {
            Release(m_sentStart, m_sentItems, f, t);
            Release(m_recvStart, m_recvItems, f, finishS[f]);
        }
        if (!m_departed.empty())
        {
            m_dirty = true;
            if (progress && (done == n || Clock::now() - lastReport >= std::chrono::duration<double>(progressIntervalS)))
            {
                lastReport = Clock::now();
                if (!progress(done, t))
                {
                    return false;
                }
            }
        }
    }
    for (const int32_t l : m_usedLinks)
    {
        SetLinkLoad(l, 0.0, t);
    }
    if (progress && !progress(done, t))
    {
        return false;
    }
    return true;
}

} // namespace cosim
