/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "flow-scheduler.h"

#include "flow-tag.h"
#include "input-validator.h"

#include "ns3/nstime.h"
#include "ns3/simulator.h"

#include <algorithm>
#include <cmath>

namespace cosim
{

namespace
{

/**
 * \param seconds time in seconds (validated: finite, in [0, kMaxSimulatedSeconds])
 * \return the time in picoseconds
 */
int64_t
SecondsToPs(double seconds)
{
    return std::llround(seconds * 1e12);
}

/**
 * \brief Invert the dependency lists: for each flow, the flows that wait for it.
 * \param input validated input
 * \param sent select "sent" dependencies (true) or "received" ones (false)
 * \param[out] offsets CSR offsets (F+1 entries)
 * \param[out] children dependents, in increasing flow id for each flow
 */
void
BuildDependents(const EngineInput& input,
                bool sent,
                std::vector<int64_t>& offsets,
                std::vector<uint32_t>& children)
{
    const uint32_t nFlows = input.GetNFlows();
    offsets.assign(nFlows + 1, 0);
    for (uint32_t f = 0; f < nFlows; ++f)
    {
        for (int64_t k = input.depOffsets[f]; k < input.depOffsets[f + 1]; ++k)
        {
            if (IsSentDependency(input.depFlows[k]) == sent)
            {
                ++offsets[DependencyFlow(input.depFlows[k]) + 1];
            }
        }
    }
    for (uint32_t f = 0; f < nFlows; ++f)
    {
        offsets[f + 1] += offsets[f];
    }
    children.resize(offsets[nFlows]);
    std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
    for (uint32_t f = 0; f < nFlows; ++f)
    {
        for (int64_t k = input.depOffsets[f]; k < input.depOffsets[f + 1]; ++k)
        {
            if (IsSentDependency(input.depFlows[k]) == sent)
            {
                children[fill[DependencyFlow(input.depFlows[k])]++] = f;
            }
        }
    }
}

} // namespace

FlowScheduler::FlowScheduler(const EngineInput& input)
    : m_input(input),
      m_packetOverhead(static_cast<uint32_t>(input.headerBytes - kPppHeaderBytes)),
      m_finished(0)
{
    const uint32_t nFlows = input.GetNFlows();
    m_sentBytes.assign(nFlows, 0);
    m_receivedBytes.assign(nFlows, 0);
    m_startPs.assign(nFlows, -1);
    m_finishPs.assign(nFlows, -1);
    m_pendingDeps.resize(nFlows);
    m_readyPs.resize(nFlows);
    m_sentReleased.assign(nFlows, false);
    for (uint32_t f = 0; f < nFlows; ++f)
    {
        m_pendingDeps[f] = input.depOffsets[f + 1] - input.depOffsets[f];
        m_readyPs[f] = SecondsToPs(input.flowEarliestStartS[f]);
    }
    BuildDependents(input, false, m_childOffsets, m_children);
    BuildDependents(input, true, m_sentChildOffsets, m_sentChildren);
}

void
FlowScheduler::SetActivateCallback(ActivateCallback callback)
{
    m_activate = callback;
}

void
FlowScheduler::Start()
{
    std::vector<int64_t> times;
    for (uint32_t f = 0; f < m_input.GetNFlows(); ++f)
    {
        if (m_pendingDeps[f] == 0)
        {
            m_ready.emplace(m_readyPs[f], f);
            times.push_back(m_readyPs[f]);
        }
    }
    std::sort(times.begin(), times.end());
    times.erase(std::unique(times.begin(), times.end()), times.end());
    for (int64_t t : times)
    {
        ns3::Simulator::Schedule(ns3::PicoSeconds(t), &FlowScheduler::ActivateDue, this);
    }
}

ns3::Ptr<ns3::Packet>
FlowScheduler::MakePacket(uint32_t flowId, bool& more)
{
    const auto total = static_cast<uint64_t>(m_input.flowBytes[flowId]);
    const auto perPacket = static_cast<uint64_t>(m_input.flowPayloadPerPacket[flowId]);
    const uint64_t payload = std::min(perPacket, total - m_sentBytes[flowId]);
    m_sentBytes[flowId] += payload;
    more = m_sentBytes[flowId] < total;
    auto packet = ns3::Create<ns3::Packet>(static_cast<uint32_t>(payload) + m_packetOverhead);
    packet->AddPacketTag(FlowTag(flowId));
    return packet;
}

void
FlowScheduler::Deliver(uint32_t flowId, uint32_t packetBytes)
{
    m_receivedBytes[flowId] += packetBytes - m_packetOverhead;
    if (m_receivedBytes[flowId] == static_cast<uint64_t>(m_input.flowBytes[flowId]))
    {
        FinishFlow(flowId);
    }
}

uint64_t
FlowScheduler::GetFinishedCount() const
{
    return m_finished;
}

int64_t
FlowScheduler::GetStartPs(uint32_t flowId) const
{
    return m_startPs[flowId];
}

int64_t
FlowScheduler::GetFinishPs(uint32_t flowId) const
{
    return m_finishPs[flowId];
}

void
FlowScheduler::ActivateDue()
{
    const int64_t now = ns3::Simulator::Now().GetTimeStep();
    while (!m_ready.empty() && m_ready.top().first <= now)
    {
        const uint32_t flowId = m_ready.top().second;
        m_ready.pop();
        StartFlow(flowId);
    }
}

void
FlowScheduler::MakeReady(uint32_t flowId, int64_t startPs)
{
    m_ready.emplace(startPs, flowId);
    const int64_t now = ns3::Simulator::Now().GetTimeStep();
    ns3::Simulator::Schedule(ns3::PicoSeconds(startPs - now), &FlowScheduler::ActivateDue, this);
}

void
FlowScheduler::StartFlow(uint32_t flowId)
{
    m_startPs[flowId] = ns3::Simulator::Now().GetTimeStep();
    if (m_input.flowBytes[flowId] == 0)
    {
        FinishFlow(flowId);
        return;
    }
    m_activate(flowId, static_cast<uint32_t>(m_input.routeLinks[m_input.routeOffsets[flowId]]));
}

void
FlowScheduler::LastFrameTransmitting(uint32_t flowId, uint32_t directedLink, uint32_t wireBytes)
{
    const double txS = wireBytes * 8.0 / m_input.linkRateBps[directedLink / 2];
    ns3::Simulator::Schedule(ns3::PicoSeconds(std::llround(txS * 1e12)),
                             &FlowScheduler::ReleaseSent,
                             this,
                             flowId);
}

void
FlowScheduler::ReleaseSent(uint32_t flowId)
{
    if (m_sentReleased[flowId])
    {
        return;
    }
    m_sentReleased[flowId] = true;
    ReleaseDependents(m_sentChildren.data() + m_sentChildOffsets[flowId],
                      m_sentChildren.data() + m_sentChildOffsets[flowId + 1]);
}

void
FlowScheduler::ReleaseDependents(const uint32_t* begin, const uint32_t* end)
{
    const int64_t now = ns3::Simulator::Now().GetTimeStep();
    for (const uint32_t* child = begin; child != end; ++child)
    {
        m_readyPs[*child] = std::max(m_readyPs[*child], now);
        if (--m_pendingDeps[*child] == 0)
        {
            MakeReady(*child, m_readyPs[*child]);
        }
    }
}

void
FlowScheduler::FinishFlow(uint32_t flowId)
{
    m_finishPs[flowId] = ns3::Simulator::Now().GetTimeStep();
    ++m_finished;
    ReleaseSent(flowId); // a 0-byte flow is sent when it finishes; otherwise already released
    ReleaseDependents(m_children.data() + m_childOffsets[flowId],
                      m_children.data() + m_childOffsets[flowId + 1]);
}

} // namespace cosim
