/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim flow solver: the event loop of the flow-level backend (max-min fair fluid flows).
 */
#ifndef COSIM_FLOW_SIMULATOR_H
#define COSIM_FLOW_SIMULATOR_H

#include "link-bins.h"

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace cosim
{

/** Read-only views of the flow arrays (owned by the caller for the duration of Run). */
struct FlowInput
{
    int64_t numFlows = 0;
    int32_t numLinks = 0;             //!< directed links
    const int64_t* routeOffsets;      //!< [numFlows + 1]
    const int32_t* routeLinks;        //!< directed link ids
    const double* capacityBps;        //!< [numLinks] bytes/s per directed link
    const double* linkLatencyS;       //!< [numLinks] propagation delay
    const double* linkBandwidthBps;   //!< [numLinks] bits/s (serialization of one frame)
    const int64_t* sizeBytes;         //!< [numFlows] payload (0: a barrier, finishes when it starts)
    const int64_t* wireBytes;         //!< [numFlows] payload + headers
    const int64_t* numPackets;        //!< [numFlows]
    const int32_t* payloadBytes;      //!< [numFlows] payload per packet (smallest MTU of the route)
    int64_t headerBytes = 0;          //!< per packet on the wire
    const double* earliestStartS;     //!< [numFlows]
    const int64_t* depOffsets;        //!< [numFlows + 1]
    const int32_t* depFlows;          //!< k: after flow k is received; -k-1: after flow k is sent
};

/** What a run returns besides the per-flow times. */
struct FlowStats
{
    int64_t rateUpdates = 0;       //!< rate solves (full + incremental)
    int64_t fullSolves = 0;
    int64_t incrementalSolves = 0;
    int64_t resolvedFlows = 0;     //!< flows whose rate was recomputed, over all solves
    int64_t events = 0;            //!< time advances
    int64_t coalescedFlows = 0;    //!< flows that drained before the event's re-solve (time tolerance)
    int64_t incrementalResolved = 0; //!< flows re-solved by incremental solves
    int64_t skippedFlows = 0;      //!< above the level but not connected to the change
    int64_t changedFlows = 0;      //!< re-solved flows whose rate changed (incremental solves)
    double fullSolveS = 0.0;       //!< wall time in full solves
    double incrementalSolveS = 0.0; //!< wall time in incremental solves (including given-up ones)
};

/**
 * \brief Flow-level simulation: every active flow drains at its max-min fair rate.
 *
 * Same model and event rules as cosim.network.flow_backend's Python loop: flows start when their
 * dependencies allow (after others are received or sent), drain at max-min fair rates that are
 * re-solved whenever a flow starts or finishes draining, and are received one path latency after
 * their last byte left (propagation plus one frame's store-and-forward on every hop but the
 * slowest).
 *
 * Re-solves are incremental. Water-filling below a level L0 is the same before and after a
 * change when L0 is at most the old rate of every flow that finished draining (no link of its
 * route saturated below it) and at most the fair share cap / flows of every link of a flow that
 * started (no link of its route can saturate below it). So the flows slower than L0 keep their
 * rates exactly, and only the others (and the new flows) are re-solved, by water-filling on the
 * capacity the kept flows leave. The rates are those of a full re-solve up to floating point;
 * when more than half of the active flows would be re-solved, a full solve is done instead.
 */
class FlowSimulator
{
  public:
    /** ``progress(done, simTime)`` returns false to stop (the caller then raises). */
    using Progress = std::function<bool(int64_t, double)>;

    /**
     * ``timeTolerance`` (default 0: exact): an opt-in approximation. At every event, the flows
     * whose projected drain time lies within timeTolerance x (the event's time) of the first one
     * (and before the next arrival) drain together: each at its own projected time (its bytes
     * and finish time are those of the rates in force), but the others' rates are re-solved
     * once, at the last of these times. A flow that others wait for closes the window (it never
     * drains late), so the freed capacity idles for at most the window. Error: about the
     * tolerance (relative) on one-phase traffic, more on dependency chains (docs/network.md).
     */
    FlowSimulator(const FlowInput& input, int64_t maxBins, double initialBinS, bool incremental,
                  double timeTolerance = 0.0);

    /**
     * Run to completion, writing start and finish times (NaN for flows that never start) and
     * per-link transmit counters. Returns false when progress asked to stop.
     */
    bool Run(double* startS, double* finishS, int64_t* txBytes, int64_t* txPackets, const Progress& progress,
             double progressIntervalS);

    const FlowStats& Stats() const { return m_stats; }
    const LinkBins& Bins() const { return m_bins; }
    /** Directed link id of every row of Bins(). */
    const std::vector<int32_t>& UsedLinks() const { return m_usedLinks; }

  private:
    struct FinishEntry
    {
        double time;
        int32_t flow;
        uint32_t version;
    };

    enum State : uint8_t
    {
        kWaiting = 0,
        kActive = 1,
        kDone = 2
    };

    // setup
    double Latency(int64_t f) const;
    double ReadyAt(int64_t f) const { return m_readyAt.empty() ? m_in.earliestStartS[f] : m_readyAt[f]; }
    void BuildLinkSlots();
    void BuildDependents();
    bool HasDependents(int64_t f) const;

    // active set and link lists
    void Activate(int64_t f, double t);
    void Deactivate(int64_t f, double t);
    void CompactSlots();
    void SetLinkLoad(int32_t l, double load, double t);
    void Settle(int64_t f, double t);
    void PushFinish(int64_t f);

    // rates
    void Solve(double t);
    void FullSolve(double t);
    void EnsureScratch();
    void DeactivateAll(const std::vector<int32_t>& flows, double t);
    bool NextFinish(FinishEntry& entry) const;
    void PopFinish();
    bool IncrementalSolve(double t);
    void BuildSubCsr(const std::vector<int32_t>& flows);
    void RestrictToChange();
    void SortByRate(size_t from);
    void ResidualSolve(const std::vector<int32_t>& flows, bool haveCsr);
    void Unload(const std::vector<int32_t>& flows, double t);
    void Reload(const std::vector<int32_t>& flows);
    bool HasArrival() const;
    std::pair<double, int64_t> NextArrival() const;
    void PopArrival();

    // dependencies
    void Release(const std::vector<int64_t>& start, const std::vector<int32_t>& items, int64_t f, double when);

    FlowInput m_in;
    bool m_incremental;
    double m_timeTolerance = 0.0;
    std::vector<double> m_departedAt; //!< drain time of each departed flow (time tolerance only)
    FlowStats m_stats;
    LinkBins m_bins;

    // per flow
    std::vector<uint8_t> m_state;
    std::vector<double> m_rate;
    std::vector<double> m_rem;   //!< bytes left at m_tUpd
    std::vector<double> m_tUpd;
    std::vector<int32_t> m_bottleneck;
    std::vector<uint32_t> m_version;
    std::vector<int32_t> m_waiting; //!< empty when no flow has dependencies
    std::vector<double> m_readyAt;  //!< empty when no flow has dependencies
    std::vector<uint32_t> m_frozen;
    uint32_t m_frozenEpoch = 0;
    // dependents: on receipt (m_recv*) and on the last byte sent (m_sent*)
    std::vector<int64_t> m_recvStart, m_sentStart;
    std::vector<int32_t> m_recvItems, m_sentItems;

    // per directed link
    std::vector<int32_t> m_usedLinks;
    std::vector<int32_t> m_row;          //!< bins row of a directed link (-1: unused)
    //! flows of link l: m_slotFlow[m_slotStart[l]..+m_slotLen[l]), the active ones and departed
    //! ones not yet compacted away (CompactSlots); m_count[l] of them are active
    std::vector<int64_t> m_slotStart;
    std::vector<int32_t> m_slotFlow;
    std::vector<int32_t> m_slotLen;
    int64_t m_liveSlots = 0;             //!< route entries of the active flows
    int64_t m_deadSlots = 0;             //!< departed flows' slots still in the lists
    std::vector<int32_t> m_count;
    std::vector<double> m_load;          //!< sum of active rates
    std::vector<double> m_flushedAt;     //!< bins hold the link's bytes up to this time
    std::vector<uint32_t> m_linkMark;
    uint32_t m_linkEpoch = 0;
    // solver scratch (per link)
    std::vector<double> m_res;
    std::vector<int32_t> m_cnt;
    std::vector<int64_t> m_subStart; //!< flows being solved on link l: m_subFlows[m_subStart[l]..+m_subLen[l])
    std::vector<int32_t> m_subLen;
    std::vector<int32_t> m_subFlows;
    std::vector<uint32_t> m_subLinkEpoch; //!< links of the last BuildSubCsr carry m_subEpoch
    uint32_t m_subEpoch = 0;
    std::vector<int32_t> m_touched;

    // events
    std::vector<int32_t> m_roots;        //!< flows without dependencies, by (ready time, index)
    size_t m_nextRoot = 0;
    std::vector<std::pair<double, int32_t>> m_released; //!< min-heap of released flows
    //! Projected drain times (lazy deletion): sorted at the last full solve, plus a min-heap of
    //! the later updates.
    std::vector<FinishEntry> m_finishSorted;
    size_t m_nextSorted = 0;
    std::vector<FinishEntry> m_finishHeap;
    std::vector<int32_t> m_admitted, m_departed, m_active, m_set;
    std::vector<double> m_oldRate;
    std::vector<int32_t> m_component, m_componentLinks, m_levelSet;
    //! the solved active flows in rising order of rate (after an incremental solve, departed
    //! flows are out of it), for the flows at or above a level
    std::vector<int32_t> m_byRate;
    std::vector<int32_t> m_activePos;
    bool m_dirty = false;
    bool m_solvedOnce = false;
};

} // namespace cosim

#endif // COSIM_FLOW_SIMULATOR_H
