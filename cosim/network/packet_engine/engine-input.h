/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: plain-data input and output of one simulation run.
 */
#ifndef COSIM_ENGINE_INPUT_H
#define COSIM_ENGINE_INPUT_H

#include <cstdint>
#include <vector>

namespace cosim
{

/**
 * \ingroup cosim-packet-engine
 * \brief Everything one packet-level simulation needs, in flat array form.
 *
 * Undirected link i joins linkNodeA[i] and linkNodeB[i]; it has two directed links,
 * 2*i (A to B) and 2*i+1 (B to A), each with its own rate and the shared delay.
 * Routes and dependencies are stored CSR-style: flow f's route is
 * routeLinks[routeOffsets[f] .. routeOffsets[f+1]) (directed link ids, src to dst) and
 * its dependencies are depFlows[depOffsets[f] .. depOffsets[f+1]).
 *
 * Nothing in here is trusted: ValidateEngineInput() must accept it before any ns-3
 * object is created.
 */
struct EngineInput
{
    int64_t nNodes{0};                      //!< number of nodes
    std::vector<int32_t> linkNodeA;         //!< per undirected link: endpoint A
    std::vector<int32_t> linkNodeB;         //!< per undirected link: endpoint B
    std::vector<double> linkRateBps;        //!< per undirected link: rate of each direction (bit/s)
    std::vector<double> linkDelayS;         //!< per undirected link: propagation delay (s)
    std::vector<int32_t> flowSrc;           //!< per flow: source node
    std::vector<int32_t> flowDst;           //!< per flow: destination node
    std::vector<int64_t> flowBytes;         //!< per flow: payload bytes
    std::vector<double> flowEarliestStartS; //!< per flow: earliest start time (s)
    std::vector<int32_t> flowPayloadPerPacket; //!< per flow: payload bytes per packet
    std::vector<int64_t> routeOffsets;      //!< CSR offsets into routeLinks (F+1 entries)
    std::vector<int32_t> routeLinks;        //!< directed link ids
    std::vector<int64_t> depOffsets;        //!< CSR offsets into depFlows (F+1 entries)
    std::vector<int32_t> depFlows;          //!< k: wait for flow k received; -k-1: for flow k sent
    int64_t headerBytes{2};                 //!< per-frame overhead on the wire, incl. 2-byte PPP
    int64_t pfcXoffBytes{0};                //!< pause upstream when ingress backlog exceeds this
    int64_t pfcXonBytes{0};                 //!< resume upstream when ingress backlog drops to this
    int64_t maxBins{1};                     //!< maximum number of time-series bins per link

    /** \return the number of undirected links */
    uint32_t GetNLinks() const
    {
        return static_cast<uint32_t>(linkNodeA.size());
    }

    /** \return the number of flows */
    uint32_t GetNFlows() const
    {
        return static_cast<uint32_t>(flowSrc.size());
    }

    /**
     * \param directedLink directed link id
     * \return the node the directed link leaves from
     */
    int32_t GetLinkSource(uint32_t directedLink) const
    {
        return (directedLink % 2 == 0) ? linkNodeA[directedLink / 2] : linkNodeB[directedLink / 2];
    }

    /**
     * \param directedLink directed link id
     * \return the node the directed link arrives at
     */
    int32_t GetLinkDestination(uint32_t directedLink) const
    {
        return (directedLink % 2 == 0) ? linkNodeB[directedLink / 2] : linkNodeA[directedLink / 2];
    }
};

/**
 * \param encoded an entry of EngineInput::depFlows
 * \return true if the dependency waits for the flow's last byte to be sent (not received)
 */
inline bool
IsSentDependency(int32_t encoded)
{
    return encoded < 0;
}

/**
 * \param encoded an entry of EngineInput::depFlows
 * \return the flow the dependency refers to
 */
inline int64_t
DependencyFlow(int32_t encoded)
{
    return encoded >= 0 ? encoded : -static_cast<int64_t>(encoded) - 1;
}

/**
 * \ingroup cosim-packet-engine
 * \brief Results of one simulation run. Per-link arrays are indexed by directed link id.
 */
struct EngineResult
{
    std::vector<double> flowStartS;         //!< time each flow started (s)
    std::vector<double> flowFinishS;        //!< time the last byte of each flow arrived (s)
    std::vector<int64_t> linkTxBytes;       //!< wire bytes transmitted
    std::vector<int64_t> linkTxPackets;     //!< frames transmitted
    std::vector<int64_t> linkPeakQueueBytes; //!< peak bytes waiting at the egress port
    std::vector<int64_t> linkPauseCount;    //!< times the sender was paused by PFC
    std::vector<double> linkPausedS;        //!< total time the sender spent paused (s)
    double binS{0};                         //!< time-series bin width (s)
    uint64_t nBins{0};                      //!< bins per link
    std::vector<int64_t> linkBinBytes;      //!< row-major [2L, nBins]: wire bytes started per bin
    double endTimeS{0};                     //!< completion time of the last flow (s)
    uint64_t hopPackets{0};                 //!< frame transmissions over all links
    uint64_t events{0};                     //!< simulator events executed
    double wallS{0};                        //!< wall-clock duration of the run (s)
    bool stopped{false};                    //!< the progress callback asked to stop early
};

} // namespace cosim

#endif /* COSIM_ENGINE_INPUT_H */
