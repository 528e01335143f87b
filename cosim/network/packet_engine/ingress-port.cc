/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "ingress-port.h"

#include "flow-scheduler.h"
#include "flow-tag.h"
#include "input-validator.h"
#include "port-table.h"

#include "ns3/simulator.h"

namespace cosim
{

IngressPort::IngressPort(uint32_t linkId,
                         ns3::Time delay,
                         uint64_t xoffBytes,
                         uint64_t xonBytes,
                         PortTable& ports,
                         FlowScheduler& flows)
    : m_linkId(linkId),
      m_delay(delay),
      m_xoff(xoffBytes),
      m_xon(xonBytes),
      m_ports(ports),
      m_flows(flows),
      m_backlog(0),
      m_pauseAsserted(false),
      m_errors(0)
{
}

bool
IngressPort::Receive(ns3::Ptr<ns3::NetDevice> device,
                     ns3::Ptr<const ns3::Packet> packet,
                     uint16_t protocol,
                     const ns3::Address& from)
{
    FlowTag tag;
    if (!packet->PeekPacketTag(tag))
    {
        ++m_errors;
        return false;
    }
    const uint32_t flowId = tag.GetFlowId();
    const int64_t next = m_flows.GetNextLink(flowId, m_linkId);
    if (next == FlowScheduler::kDeliverHere)
    {
        m_flows.Deliver(flowId, packet->GetSize());
        return true;
    }
    if (next < 0)
    {
        ++m_errors;
        return false;
    }
    // The device hands over its own copy of the frame; nobody else references it.
    m_backlog += packet->GetSize() + kPppHeaderBytes;
    m_ports.GetEgress(static_cast<uint32_t>(next))
        .EnqueueTransit(ns3::ConstCast<ns3::Packet>(packet), m_linkId);
    if (!m_pauseAsserted && m_backlog > m_xoff)
    {
        SignalUpstream(true);
    }
    return true;
}

void
IngressPort::SignalUpstream(bool pause)
{
    m_pauseAsserted = pause;
    EgressPort* upstream = &m_ports.GetEgress(m_linkId);
    ns3::Simulator::Schedule(m_delay, pause ? &EgressPort::Pause : &EgressPort::Resume, upstream);
}

void
IngressPort::Drop(ns3::Ptr<const ns3::Packet> packet)
{
    ++m_errors;
}

uint64_t
IngressPort::GetErrorCount() const
{
    return m_errors;
}

} // namespace cosim
