/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: the receiving side of one directed link.
 */
#ifndef COSIM_INGRESS_PORT_H
#define COSIM_INGRESS_PORT_H

#include "ns3/address.h"
#include "ns3/net-device.h"
#include "ns3/nstime.h"
#include "ns3/packet.h"
#include "ns3/ptr.h"

#include <cstdint>

namespace cosim
{

class FlowScheduler;
class PortTable;

/**
 * \ingroup cosim-packet-engine
 * \brief Input port of a node from one directed link: forwarding and PFC.
 *
 * Installed as the receive callback of the device at the receiving end of the link
 * (bypassing Node protocol dispatch). A frame whose flow ends here is delivered to the
 * FlowScheduler; any other frame is queued at the egress port of the next hop of the flow's
 * source route, and its bytes count towards this port's backlog until it starts
 * serialization there (Release()). Above the XOFF threshold the upstream egress port is
 * paused, at or below XON it is resumed; each signal takes the link's propagation delay.
 */
class IngressPort
{
  public:
    /**
     * \param linkId directed link id
     * \param delay propagation delay of the link (for PFC signals)
     * \param xoffBytes pause upstream when the backlog exceeds this
     * \param xonBytes resume upstream when the backlog drops to this
     * \param ports all ports
     * \param flows flow state
     */
    IngressPort(uint32_t linkId,
                ns3::Time delay,
                uint64_t xoffBytes,
                uint64_t xonBytes,
                PortTable& ports,
                FlowScheduler& flows);

    IngressPort(const IngressPort&) = delete;
    IngressPort& operator=(const IngressPort&) = delete;

    /**
     * \brief NetDevice receive callback.
     * \param device receiving device
     * \param packet the frame, PPP header removed
     * \param protocol protocol number
     * \param from sender address
     * \return true if the frame was accepted
     */
    bool Receive(ns3::Ptr<ns3::NetDevice> device,
                 ns3::Ptr<const ns3::Packet> packet,
                 uint16_t protocol,
                 const ns3::Address& from);

    /**
     * \brief A frame that arrived here started serialization at its egress port.
     * \param wireBytes its wire size
     */
    void Release(uint64_t wireBytes)
    {
        m_backlog -= wireBytes;
        if (m_pauseAsserted && m_backlog <= m_xon)
        {
            SignalUpstream(false);
        }
    }

    /**
     * \brief Trace sink for PhyRxDrop.
     * \param packet the dropped frame
     */
    void Drop(ns3::Ptr<const ns3::Packet> packet);

    /** \return frames dropped or not forwardable (must be 0) */
    uint64_t GetErrorCount() const;

  private:
    /**
     * \brief Schedule a PFC pause or resume at the upstream egress port.
     * \param pause true to pause, false to resume
     */
    void SignalUpstream(bool pause);

    uint32_t m_linkId;      //!< directed link id
    ns3::Time m_delay;      //!< propagation delay of PFC signals
    uint64_t m_xoff;        //!< XOFF threshold
    uint64_t m_xon;         //!< XON threshold
    PortTable& m_ports;     //!< all ports
    FlowScheduler& m_flows; //!< flow state
    uint64_t m_backlog;     //!< bytes that arrived here and wait at this node
    bool m_pauseAsserted;   //!< upstream was told to pause
    uint64_t m_errors;      //!< dropped / unroutable frames
};

} // namespace cosim

#endif /* COSIM_INGRESS_PORT_H */
