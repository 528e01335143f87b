/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "progress-monitor.h"

#include "flow-scheduler.h"

#include "ns3/simulator.h"

namespace cosim
{

ProgressMonitor::ProgressMonitor(const FlowScheduler& flows,
                                 Callback callback,
                                 std::chrono::duration<double> interval)
    : m_flows(flows),
      m_callback(std::move(callback)),
      m_interval(std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval)),
      m_last(std::chrono::steady_clock::now()),
      m_ticks(0),
      m_stopped(false)
{
}

uint64_t
ProgressMonitor::GetTicks() const
{
    return m_ticks;
}

bool
ProgressMonitor::IsStopped() const
{
    return m_stopped;
}

void
ProgressMonitor::Check()
{
    if (m_stopped)
    {
        return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - m_last < m_interval)
    {
        return;
    }
    m_last = now;
    if (!m_callback(m_flows.GetFinishedCount(), ns3::Simulator::Now().GetSeconds()))
    {
        m_stopped = true;
        ns3::Simulator::Stop();
    }
}

} // namespace cosim
