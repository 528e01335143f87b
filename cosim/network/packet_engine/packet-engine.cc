/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "packet-engine.h"

#include "egress-port.h"
#include "flow-scheduler.h"
#include "ingress-port.h"
#include "input-validator.h"
#include "link-bin-counter.h"
#include "port-table.h"

#include "ns3/callback.h"
#include "ns3/data-rate.h"
#include "ns3/drop-tail-queue.h"
#include "ns3/node.h"
#include "ns3/nstime.h"
#include "ns3/point-to-point-channel.h"
#include "ns3/point-to-point-net-device.h"
#include "ns3/queue-size.h"
#include "ns3/simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace cosim
{

namespace
{

/** Initial width of the time-series bins: 1 us in picoseconds. */
constexpr int64_t kInitialBinWidthPs = 1000000;

/** Device queue capacity in frames; the egress port keeps at most one frame waiting there. */
constexpr uint32_t kDeviceQueueFrames = 16;

/** Wall time between two progress reports. */
constexpr std::chrono::duration<double> kProgressInterval{0.2};

/**
 * \return the mutex serializing simulation runs (ns-3's Simulator is a process singleton)
 */
std::mutex&
GetRunMutex()
{
    static std::mutex mutex;
    return mutex;
}

/**
 * \brief Scope guard: destroys the ns-3 simulator (events, nodes, channels) on scope exit.
 */
class SimulatorSession
{
  public:
    SimulatorSession() = default;
    SimulatorSession(const SimulatorSession&) = delete;
    SimulatorSession& operator=(const SimulatorSession&) = delete;

    ~SimulatorSession()
    {
        ns3::Simulator::Destroy();
    }
};

/**
 * \param ps time in picoseconds
 * \return the time in seconds
 */
double
PsToSeconds(int64_t ps)
{
    return static_cast<double>(ps) * 1e-12;
}

} // namespace

PacketEngine::PacketEngine(const EngineInput& input)
    : m_input(input)
{
    ValidateEngineInput(input);
}

EngineResult
PacketEngine::Run(ProgressMonitor::Callback progress)
{
    std::lock_guard<std::mutex> lock(GetRunMutex());
    if (ns3::Time::GetResolution() != ns3::Time::PS)
    {
        throw std::logic_error("cosim packet engine: ns-3 time resolution must be picoseconds");
    }
    const auto wallStart = std::chrono::steady_clock::now();

    FlowScheduler flows(m_input);
    LinkBinCounter bins(2 * m_input.GetNLinks(), static_cast<uint64_t>(m_input.maxBins), kInitialBinWidthPs);
    ProgressMonitor monitor(flows, std::move(progress), kProgressInterval);
    PortTable ports;
    EngineResult result;
    {
        // Declared after the ports: the simulator is destroyed while they still exist.
        SimulatorSession session;
        Build(ports, flows, bins, monitor);
        flows.SetActivateCallback(ns3::MakeCallback(&PortTable::ActivateFlow, &ports));
        flows.Start();
        ns3::Simulator::Run();
        result.stopped = monitor.IsStopped();
        result.events = ns3::Simulator::GetEventCount();
        Collect(ports, flows, bins, result);
        if (!result.stopped)
        {
            CheckCompletion(ports, flows);
        }
    }
    result.wallS =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wallStart).count();
    return result;
}

void
PacketEngine::Build(PortTable& ports,
                    FlowScheduler& flows,
                    LinkBinCounter& bins,
                    ProgressMonitor& monitor) const
{
    std::vector<ns3::Ptr<ns3::Node>> nodes;
    nodes.reserve(static_cast<size_t>(m_input.nNodes));
    for (int64_t n = 0; n < m_input.nNodes; ++n)
    {
        nodes.push_back(ns3::CreateObject<ns3::Node>());
    }
    const auto xoff = static_cast<uint64_t>(m_input.pfcXoffBytes);
    const auto xon = static_cast<uint64_t>(m_input.pfcXonBytes);
    for (uint32_t i = 0; i < m_input.GetNLinks(); ++i)
    {
        const ns3::Time delay = ns3::PicoSeconds(std::llround(m_input.linkDelayS[i] * 1e12));
        const ns3::DataRate rate(static_cast<uint64_t>(std::llround(m_input.linkRateBps[i])));
        auto channel = ns3::CreateObject<ns3::PointToPointChannel>();
        channel->SetAttribute("Delay", ns3::TimeValue(delay));
        // device[0] sits on node A, device[1] on node B.
        ns3::Ptr<ns3::PointToPointNetDevice> device[2];
        const int32_t endpoint[2] = {m_input.linkNodeA[i], m_input.linkNodeB[i]};
        for (int side = 0; side < 2; ++side)
        {
            device[side] = ns3::CreateObject<ns3::PointToPointNetDevice>();
            device[side]->SetDataRate(rate);
            device[side]->SetMtu(static_cast<uint16_t>(kMaxFrameBytes));
            auto queue = ns3::CreateObject<ns3::DropTailQueue<ns3::Packet>>();
            queue->SetMaxSize(ns3::QueueSize(ns3::QueueSizeUnit::PACKETS, kDeviceQueueFrames));
            device[side]->SetQueue(queue);
            nodes[endpoint[side]]->AddDevice(device[side]);
            device[side]->Attach(channel);
        }
        // Directed link 2i goes A -> B, 2i+1 goes B -> A.
        for (int direction = 0; direction < 2; ++direction)
        {
            const uint32_t link = 2 * i + direction;
            const auto& sender = device[direction];
            const auto& receiver = device[1 - direction];
            auto egress = std::make_unique<EgressPort>(link, sender, ports, flows, bins, monitor);
            auto ingress = std::make_unique<IngressPort>(link, delay, xoff, xon, ports, flows);
            // Replaces the Node's protocol dispatch installed by Node::AddDevice().
            receiver->SetReceiveCallback(ns3::MakeCallback(&IngressPort::Receive, ingress.get()));
            receiver->TraceConnectWithoutContext("PhyRxDrop",
                                                 ns3::MakeCallback(&IngressPort::Drop, ingress.get()));
            ports.Add(std::move(egress), std::move(ingress));
        }
    }
}

void
PacketEngine::Collect(PortTable& ports,
                      const FlowScheduler& flows,
                      const LinkBinCounter& bins,
                      EngineResult& result) const
{
    const uint32_t nFlows = m_input.GetNFlows();
    const double nan = std::numeric_limits<double>::quiet_NaN();
    result.flowStartS.resize(nFlows);
    result.flowFinishS.resize(nFlows);
    int64_t endPs = 0;
    for (uint32_t f = 0; f < nFlows; ++f)
    {
        const int64_t start = flows.GetStartPs(f);
        const int64_t finish = flows.GetFinishPs(f);
        result.flowStartS[f] = start < 0 ? nan : PsToSeconds(start);
        result.flowFinishS[f] = finish < 0 ? nan : PsToSeconds(finish);
        endPs = std::max(endPs, finish);
    }
    if (result.stopped)
    {
        endPs = ns3::Simulator::Now().GetTimeStep();
    }
    result.endTimeS = PsToSeconds(endPs);

    const uint32_t nDirected = ports.GetN();
    result.linkTxBytes.resize(nDirected);
    result.linkTxPackets.resize(nDirected);
    result.linkPeakQueueBytes.resize(nDirected);
    result.linkPauseCount.resize(nDirected);
    result.linkPausedS.resize(nDirected);
    result.hopPackets = 0;
    for (uint32_t link = 0; link < nDirected; ++link)
    {
        EgressPort& port = ports.GetEgress(link);
        port.FinishRun();
        result.linkTxBytes[link] = static_cast<int64_t>(port.GetTxBytes());
        result.linkTxPackets[link] = static_cast<int64_t>(port.GetTxPackets());
        result.linkPeakQueueBytes[link] = static_cast<int64_t>(port.GetPeakQueueBytes());
        result.linkPauseCount[link] = static_cast<int64_t>(port.GetPauseCount());
        result.linkPausedS[link] = PsToSeconds(port.GetPausedPs());
        result.hopPackets += port.GetTxPackets();
    }
    result.binS = PsToSeconds(bins.GetWidthPs());
    result.nBins = bins.GetBinCount();
    bins.Export(result.linkBinBytes);
}

void
PacketEngine::CheckCompletion(PortTable& ports, const FlowScheduler& flows) const
{
    uint64_t faults = 0;
    for (uint32_t link = 0; link < ports.GetN(); ++link)
    {
        faults += ports.GetEgress(link).GetDropCount() + ports.GetIngress(link).GetErrorCount();
    }
    if (faults > 0)
    {
        std::ostringstream os;
        os << "cosim packet engine internal error: " << faults
           << " frames were dropped or could not be forwarded (the engine must be lossless)";
        throw std::runtime_error(os.str());
    }
    const uint64_t unfinished = m_input.GetNFlows() - flows.GetFinishedCount();
    if (unfinished > 0)
    {
        uint32_t first = 0;
        while (flows.GetFinishPs(first) >= 0)
        {
            ++first;
        }
        uint32_t stuckPorts = 0;
        for (uint32_t link = 0; link < ports.GetN(); ++link)
        {
            stuckPorts += ports.GetEgress(link).IsIdle() ? 0 : 1;
        }
        std::ostringstream os;
        os << "simulation ended with " << unfinished << " of " << m_input.GetNFlows()
           << " flows unfinished (first: flow " << first << ") and " << stuckPorts
           << " egress ports holding frames: PFC deadlock (cyclic buffer dependency between "
              "routes); raise pfc_xoff_bytes or change the routes";
        throw std::runtime_error(os.str());
    }
}

} // namespace cosim
