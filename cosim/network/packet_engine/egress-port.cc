/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "egress-port.h"

#include "flow-scheduler.h"
#include "input-validator.h"
#include "link-bin-counter.h"
#include "port-table.h"
#include "progress-monitor.h"

#include "ns3/callback.h"
#include "ns3/simulator.h"

#include <algorithm>

namespace cosim
{

namespace
{
/** EtherType handed to PointToPointNetDevice::Send (mapped to a PPP protocol number). */
constexpr uint16_t kEtherTypeIpv4 = 0x0800;
} // namespace

EgressPort::EgressPort(uint32_t linkId,
                       ns3::Ptr<ns3::PointToPointNetDevice> device,
                       PortTable& ports,
                       FlowScheduler& flows,
                       LinkBinCounter& bins,
                       ProgressMonitor& monitor)
    : m_linkId(linkId),
      m_device(device),
      m_destination(device->GetBroadcast()),
      m_ports(ports),
      m_flows(flows),
      m_bins(bins),
      m_monitor(monitor),
      m_transitBytes(0),
      m_transitTurn(true),
      m_deviceWaiting(0),
      m_deviceWaitingBytes(0),
      m_paused(false),
      m_pausedSince(0),
      m_txBytes(0),
      m_txPackets(0),
      m_peakQueue(0),
      m_pauseCount(0),
      m_pausedPs(0),
      m_drops(0)
{
    device->TraceConnectWithoutContext("PhyTxBegin", ns3::MakeCallback(&EgressPort::PhyTxBegin, this));
    device->TraceConnectWithoutContext("MacTxDrop", ns3::MakeCallback(&EgressPort::Drop, this));
    device->TraceConnectWithoutContext("PhyTxDrop", ns3::MakeCallback(&EgressPort::Drop, this));
}

void
EgressPort::EnqueueTransit(ns3::Ptr<ns3::Packet> packet, uint32_t ingressLink)
{
    m_transitBytes += packet->GetSize() + kPppHeaderBytes;
    m_transit.push_back(TransitFrame{std::move(packet), ingressLink});
    TrySend();
}

void
EgressPort::ActivateFlow(uint32_t flowId)
{
    m_localFlows.push_back(flowId);
    TrySend();
}

void
EgressPort::Pause()
{
    if (!m_paused)
    {
        m_paused = true;
        ++m_pauseCount;
        m_pausedSince = ns3::Simulator::Now().GetTimeStep();
    }
}

void
EgressPort::Resume()
{
    if (m_paused)
    {
        m_paused = false;
        m_pausedPs += ns3::Simulator::Now().GetTimeStep() - m_pausedSince;
        TrySend();
    }
}

void
EgressPort::FinishRun()
{
    if (m_paused)
    {
        const int64_t now = ns3::Simulator::Now().GetTimeStep();
        m_pausedPs += now - m_pausedSince;
        m_pausedSince = now;
    }
}

void
EgressPort::TrySend()
{
    while (!m_paused && m_deviceWaiting == 0)
    {
        ns3::Ptr<ns3::Packet> packet;
        int64_t ingress;
        if (!m_transit.empty() && (m_localFlows.empty() || m_transitTurn))
        {
            TransitFrame& front = m_transit.front();
            packet = std::move(front.packet);
            ingress = front.ingressLink;
            m_transit.pop_front();
            m_transitBytes -= packet->GetSize() + kPppHeaderBytes;
            m_transitTurn = false;
        }
        else if (!m_localFlows.empty())
        {
            const uint32_t flowId = m_localFlows.front();
            m_localFlows.pop_front();
            bool more = false;
            packet = m_flows.MakePacket(flowId, more);
            if (more)
            {
                m_localFlows.push_back(flowId);
            }
            ingress = more ? kLocalFrame : LastFrameMarker(flowId);
            m_transitTurn = true;
        }
        else
        {
            break;
        }
        const uint64_t wireBytes = packet->GetSize() + kPppHeaderBytes;
        ++m_deviceWaiting;
        m_deviceWaitingBytes += wireBytes;
        m_deviceIngress.push_back(ingress);
        // If the device is idle this starts transmission right away, and PhyTxBegin() hands
        // over the following frame before Send() returns.
        if (!m_device->Send(packet, m_destination, kEtherTypeIpv4))
        {
            // Counted by the drop trace; undo the bookkeeping so the port does not stall.
            --m_deviceWaiting;
            m_deviceWaitingBytes -= wireBytes;
            m_deviceIngress.pop_back();
        }
    }
    m_peakQueue = std::max(m_peakQueue, m_transitBytes + m_deviceWaitingBytes);
}

void
EgressPort::PhyTxBegin(ns3::Ptr<const ns3::Packet> packet)
{
    const uint32_t wireBytes = packet->GetSize();
    ++m_txPackets;
    m_txBytes += wireBytes;
    m_bins.Record(m_linkId, ns3::Simulator::Now().GetTimeStep(), wireBytes);
    --m_deviceWaiting;
    m_deviceWaitingBytes -= wireBytes;
    const int64_t ingress = m_deviceIngress.front();
    m_deviceIngress.pop_front();
    if (ingress >= 0)
    {
        m_ports.GetIngress(static_cast<uint32_t>(ingress)).Release(wireBytes);
    }
    else if (ingress != kLocalFrame)
    {
        m_flows.LastFrameTransmitting(FlowOfLastFrame(ingress), m_linkId, wireBytes);
    }
    TrySend();
    m_monitor.Tick();
}

void
EgressPort::Drop(ns3::Ptr<const ns3::Packet> packet)
{
    ++m_drops;
}

uint64_t
EgressPort::GetTxBytes() const
{
    return m_txBytes;
}

uint64_t
EgressPort::GetTxPackets() const
{
    return m_txPackets;
}

uint64_t
EgressPort::GetPeakQueueBytes() const
{
    return m_peakQueue;
}

uint64_t
EgressPort::GetPauseCount() const
{
    return m_pauseCount;
}

int64_t
EgressPort::GetPausedPs() const
{
    return m_pausedPs;
}

uint64_t
EgressPort::GetDropCount() const
{
    return m_drops;
}

bool
EgressPort::IsIdle() const
{
    return m_transit.empty() && m_localFlows.empty() && m_deviceWaiting == 0;
}

} // namespace cosim
