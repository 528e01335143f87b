/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: flow lifecycle (dependencies, start, lazy packet creation, finish).
 */
#ifndef COSIM_FLOW_SCHEDULER_H
#define COSIM_FLOW_SCHEDULER_H

#include "engine-input.h"

#include "ns3/callback.h"
#include "ns3/packet.h"
#include "ns3/ptr.h"

#include <cstdint>
#include <functional>
#include <queue>
#include <utility>
#include <vector>

namespace cosim
{

/**
 * \ingroup cosim-packet-engine
 * \brief Owns the state of every flow and drives it through its lifecycle.
 *
 * A flow becomes ready when all its dependencies are met: "received" dependencies when the
 * other flow finished, "sent" dependencies when the other flow's last frame has been serialized
 * onto its first link. It starts at max(earliest start, latest dependency time). Ready flows wait in a queue ordered by
 * (start time, flow id); one simulator event per start time activates all flows due, in that
 * order, so flows starting together are handed to their first egress port in flow-id order.
 * Packets are created lazily, one at a time, when the first egress port asks for one.
 * The flow finishes when its last payload byte arrives at the destination.
 */
class FlowScheduler
{
  public:
    /** Activation callback: (flow id, first directed link of its route). */
    using ActivateCallback = ns3::Callback<void, uint32_t, uint32_t>;

    /** Return value of GetNextLink() when the packet has reached its destination. */
    static constexpr int64_t kDeliverHere = -1;
    /** Return value of GetNextLink() when the link is not on the flow's route (a bug). */
    static constexpr int64_t kNotOnRoute = -2;

    /**
     * \param input validated input; must outlive the scheduler
     */
    explicit FlowScheduler(const EngineInput& input);

    /**
     * \brief Set where started flows with payload are handed to.
     * \param callback activation callback
     */
    void SetActivateCallback(ActivateCallback callback);

    /** \brief Queue the flows without dependencies; call once before ns3::Simulator::Run(). */
    void Start();

    /**
     * \brief Create the next packet of a flow (payload + header_bytes - 2 bytes, tagged).
     * \param flowId the flow; must have unsent bytes
     * \param[out] more set to true if the flow still has unsent bytes afterwards
     * \return the packet
     */
    ns3::Ptr<ns3::Packet> MakePacket(uint32_t flowId, bool& more);

    /**
     * \brief Find the hop after a given directed link on a flow's route.
     * \param flowId the flow
     * \param inLink the directed link the packet arrived on
     * \return the next directed link, kDeliverHere or kNotOnRoute
     */
    int64_t GetNextLink(uint32_t flowId, uint32_t inLink) const
    {
        const int32_t* route = m_input.routeLinks.data();
        const int64_t end = m_input.routeOffsets[flowId + 1];
        for (int64_t k = m_input.routeOffsets[flowId]; k < end; ++k)
        {
            if (static_cast<uint32_t>(route[k]) == inLink)
            {
                return (k + 1 < end) ? route[k + 1] : kDeliverHere;
            }
        }
        return kNotOnRoute;
    }

    /**
     * \brief Account a packet that reached the flow's destination.
     * \param flowId the flow
     * \param packetBytes packet size after the PPP header was removed
     */
    void Deliver(uint32_t flowId, uint32_t packetBytes);

    /**
     * \brief The last frame of a flow starts serializing on its first link: its "sent"
     * dependents are released when that serialization ends.
     * \param flowId the flow
     * \param directedLink the flow's first directed link
     * \param wireBytes the frame's size on the wire
     */
    void LastFrameTransmitting(uint32_t flowId, uint32_t directedLink, uint32_t wireBytes);

    /** \return the number of finished flows */
    uint64_t GetFinishedCount() const;

    /**
     * \param flowId the flow
     * \return start time in picoseconds, or -1 if the flow never started
     */
    int64_t GetStartPs(uint32_t flowId) const;

    /**
     * \param flowId the flow
     * \return finish time in picoseconds, or -1 if the flow never finished
     */
    int64_t GetFinishPs(uint32_t flowId) const;

  private:
    /** \brief Simulator event: start every queued flow whose start time has come. */
    void ActivateDue();

    /**
     * \brief Queue a flow to start at a given time and schedule its activation.
     * \param flowId the flow
     * \param startPs start time in picoseconds (>= now)
     */
    void MakeReady(uint32_t flowId, int64_t startPs);

    /**
     * \brief Start a flow now.
     * \param flowId the flow
     */
    void StartFlow(uint32_t flowId);

    /**
     * \brief Release the dependents waiting for a flow's last byte to be sent.
     * \param flowId the flow
     */
    void ReleaseSent(uint32_t flowId);

    /**
     * \brief Count one met dependency of each listed dependent; queue those now ready.
     * \param begin first dependent
     * \param end one past the last dependent
     */
    void ReleaseDependents(const uint32_t* begin, const uint32_t* end);

    /**
     * \brief Finish a flow now and release its dependents.
     * \param flowId the flow
     */
    void FinishFlow(uint32_t flowId);

    /** (start time ps, flow id), ordered smallest first. */
    using ReadyEntry = std::pair<int64_t, uint32_t>;

    const EngineInput& m_input;                  //!< validated input
    uint32_t m_packetOverhead;                   //!< header_bytes - PPP header
    ActivateCallback m_activate;                 //!< hands flows to their first egress port
    std::vector<uint64_t> m_sentBytes;           //!< payload bytes packetized so far
    std::vector<uint64_t> m_receivedBytes;       //!< payload bytes delivered so far
    std::vector<int64_t> m_startPs;              //!< start time, -1 if not started
    std::vector<int64_t> m_finishPs;             //!< finish time, -1 if not finished
    std::vector<int64_t> m_pendingDeps;          //!< unfinished dependencies
    std::vector<int64_t> m_readyPs;              //!< max(earliest start, finished deps)
    std::vector<int64_t> m_childOffsets;         //!< CSR offsets of dependents on receipt
    std::vector<uint32_t> m_children;            //!< dependents on receipt
    std::vector<int64_t> m_sentChildOffsets;     //!< CSR offsets of dependents on sending
    std::vector<uint32_t> m_sentChildren;        //!< dependents on sending
    std::vector<bool> m_sentReleased;            //!< sent dependents already released
    std::priority_queue<ReadyEntry, std::vector<ReadyEntry>, std::greater<>> m_ready; //!< ready flows
    uint64_t m_finished;                         //!< finished flows
};

} // namespace cosim

#endif /* COSIM_FLOW_SCHEDULER_H */
