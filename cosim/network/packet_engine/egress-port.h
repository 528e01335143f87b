/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: the sending side of one directed link.
 */
#ifndef COSIM_EGRESS_PORT_H
#define COSIM_EGRESS_PORT_H

#include "ns3/address.h"
#include "ns3/packet.h"
#include "ns3/point-to-point-net-device.h"
#include "ns3/ptr.h"

#include <cstdint>
#include <deque>

namespace cosim
{

class FlowScheduler;
class LinkBinCounter;
class PortTable;
class ProgressMonitor;

/**
 * \ingroup cosim-packet-engine
 * \brief Output port of a node onto one directed link.
 *
 * Holds a FIFO of transit frames and the round-robin list of active flows that originate at
 * this node and leave through this port (served one packet per turn in activation order;
 * their packets are created only when it is their turn). When both kinds are pending, turns
 * alternate between the FIFO and the round robin.
 *
 * The port keeps at most one frame waiting in the PointToPointNetDevice queue: when a frame
 * starts serialization (PhyTxBegin trace, device BUSY) the next frame is handed over, so the
 * device sends back to back without a send event of its own. A frame for an idle device is
 * sent directly. The frame counters, time series and PFC release of the ingress backlog are
 * also updated from PhyTxBegin.
 *
 * PFC: Pause() stops handing frames to the device (the frame on the wire and the one in the
 * device queue still go out) until Resume().
 */
class EgressPort
{
  public:
    /**
     * \param linkId directed link id
     * \param device the net device at the sending end of the link
     * \param ports all ports (to release ingress backlog)
     * \param flows flow state (to create local packets)
     * \param bins time-series counter
     * \param monitor progress monitor, ticked per transmitted frame
     */
    EgressPort(uint32_t linkId,
               ns3::Ptr<ns3::PointToPointNetDevice> device,
               PortTable& ports,
               FlowScheduler& flows,
               LinkBinCounter& bins,
               ProgressMonitor& monitor);

    EgressPort(const EgressPort&) = delete;
    EgressPort& operator=(const EgressPort&) = delete;

    /**
     * \brief Queue a frame received on another link for transmission here.
     * \param packet the packet (without PPP header)
     * \param ingressLink directed link it arrived on
     */
    void EnqueueTransit(ns3::Ptr<ns3::Packet> packet, uint32_t ingressLink);

    /**
     * \brief Add a started local flow to the round robin.
     * \param flowId the flow
     */
    void ActivateFlow(uint32_t flowId);

    /** \brief PFC pause frame received from downstream. */
    void Pause();

    /** \brief PFC resume frame received from downstream. */
    void Resume();

    /** \brief Close an open pause interval at the current time (end of the run). */
    void FinishRun();

    /** \return wire bytes transmitted */
    uint64_t GetTxBytes() const;
    /** \return frames transmitted */
    uint64_t GetTxPackets() const;
    /** \return peak bytes waiting (transit FIFO + device queue) */
    uint64_t GetPeakQueueBytes() const;
    /** \return number of PFC pauses */
    uint64_t GetPauseCount() const;
    /** \return total paused time in picoseconds */
    int64_t GetPausedPs() const;
    /** \return frames the device dropped (must be 0) */
    uint64_t GetDropCount() const;
    /** \return true if nothing is left to send */
    bool IsIdle() const;

  private:
    /** \brief Hand frames to the device while it has none waiting and the port is not paused. */
    void TrySend();

    /**
     * \brief Trace sink for PhyTxBegin: a frame starts serialization.
     * \param packet the frame (with PPP header)
     */
    void PhyTxBegin(ns3::Ptr<const ns3::Packet> packet);

    /**
     * \brief Trace sink for MacTxDrop / PhyTxDrop.
     * \param packet the dropped frame
     */
    void Drop(ns3::Ptr<const ns3::Packet> packet);

    /** A transit frame and the link it arrived on. */
    struct TransitFrame
    {
        ns3::Ptr<ns3::Packet> packet; //!< the frame
        uint32_t ingressLink;         //!< directed link it arrived on
    };

    static constexpr int64_t kLocalFrame = -1; //!< ingress marker of locally created frames

    /**
     * \param flowId a local flow
     * \return the ingress marker of that flow's last frame (<= -2)
     */
    static int64_t LastFrameMarker(uint32_t flowId)
    {
        return -2 - static_cast<int64_t>(flowId);
    }

    /**
     * \param marker an ingress marker made by LastFrameMarker()
     * \return the flow whose last frame it marks
     */
    static uint32_t FlowOfLastFrame(int64_t marker)
    {
        return static_cast<uint32_t>(-2 - marker);
    }

    uint32_t m_linkId;                            //!< directed link id
    ns3::Ptr<ns3::PointToPointNetDevice> m_device; //!< sending device
    ns3::Address m_destination;                   //!< destination address for Send()
    PortTable& m_ports;                           //!< all ports
    FlowScheduler& m_flows;                       //!< flow state
    LinkBinCounter& m_bins;                       //!< time series
    ProgressMonitor& m_monitor;                   //!< progress monitor

    std::deque<TransitFrame> m_transit; //!< transit FIFO
    uint64_t m_transitBytes;            //!< wire bytes in the transit FIFO
    std::deque<uint32_t> m_localFlows;  //!< active local flows, round robin
    bool m_transitTurn;                 //!< when both are pending: transit goes next

    uint32_t m_deviceWaiting;            //!< frames handed to the device, not yet on the wire
    uint64_t m_deviceWaitingBytes;       //!< their wire bytes
    std::deque<int64_t> m_deviceIngress; //!< ingress link of those frames, FIFO

    bool m_paused;          //!< PFC paused
    int64_t m_pausedSince;  //!< start of the current pause (ps)

    uint64_t m_txBytes;     //!< wire bytes transmitted
    uint64_t m_txPackets;   //!< frames transmitted
    uint64_t m_peakQueue;   //!< peak waiting bytes
    uint64_t m_pauseCount;  //!< pauses
    int64_t m_pausedPs;     //!< total paused time (ps)
    uint64_t m_drops;       //!< device drops
};

} // namespace cosim

#endif /* COSIM_EGRESS_PORT_H */
