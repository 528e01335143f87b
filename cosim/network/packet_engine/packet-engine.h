/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: builds the ns-3 network for one EngineInput and runs it.
 */
#ifndef COSIM_PACKET_ENGINE_H
#define COSIM_PACKET_ENGINE_H

#include "engine-input.h"
#include "progress-monitor.h"

namespace cosim
{

class FlowScheduler;
class LinkBinCounter;
class PortTable;

/**
 * \ingroup cosim-packet-engine
 * \brief Packet-level simulation of source-routed, PFC-lossless flows on ns-3.
 *
 * One ns3::Node per topology node and one PointToPointChannel with two
 * PointToPointNetDevices per undirected link; raw L2 frames tagged with their flow id
 * (no IP stack). Each directed link has an EgressPort at its sender and an IngressPort at
 * its receiver, which own all forwarding, scheduling and PFC logic.
 *
 * ns-3's Simulator is a process-wide singleton: Run() serializes runs with a mutex and
 * calls Simulator::Destroy() before returning (also when it throws), so runs can be
 * repeated in one process with identical results. The Time resolution must be
 * picoseconds (set once at module initialization).
 */
class PacketEngine
{
  public:
    /**
     * \brief Validate the input; no ns-3 object is created.
     * \param input the simulation input; must outlive the engine
     * \throws std::invalid_argument if the input is invalid
     */
    explicit PacketEngine(const EngineInput& input);

    /**
     * \brief Build the network, simulate until all flows finished, tear down.
     * \param progress progress callback (see ProgressMonitor); may be empty
     * \return the results; EngineResult::stopped is set if the callback asked to stop
     * \throws std::runtime_error if flows cannot finish (e.g. PFC deadlock) or on an
     *         internal error such as a dropped frame
     */
    EngineResult Run(ProgressMonitor::Callback progress);

  private:
    /**
     * \brief Create nodes, channels, devices and ports.
     * \param ports receives the ports
     * \param flows flow state
     * \param bins time-series counter
     * \param monitor progress monitor
     */
    void Build(PortTable& ports, FlowScheduler& flows, LinkBinCounter& bins, ProgressMonitor& monitor) const;

    /**
     * \brief Fill the result from the final state (simulator still alive).
     * \param ports all ports
     * \param flows flow state
     * \param bins time-series counter
     * \param result receives the results
     */
    void Collect(PortTable& ports, const FlowScheduler& flows, const LinkBinCounter& bins, EngineResult& result) const;

    /**
     * \brief Throw std::runtime_error if a run that was not stopped left work undone.
     * \param ports all ports
     * \param flows flow state
     */
    void CheckCompletion(PortTable& ports, const FlowScheduler& flows) const;

    const EngineInput& m_input; //!< validated input
};

} // namespace cosim

#endif /* COSIM_PACKET_ENGINE_H */
