/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: wall-clock throttled progress reporting and early stop.
 */
#ifndef COSIM_PROGRESS_MONITOR_H
#define COSIM_PROGRESS_MONITOR_H

#include <chrono>
#include <cstdint>
#include <functional>

namespace cosim
{

class FlowScheduler;

/**
 * \ingroup cosim-packet-engine
 * \brief Reports progress at most every ~0.2 s of wall time and stops the run on request.
 *
 * The engine calls Tick() once per frame transmission; every 1024 ticks the wall clock is
 * read, and when the reporting interval has passed the callback gets the number of
 * finished flows and the simulation time. If the callback returns false, the monitor calls
 * ns3::Simulator::Stop() and ignores further ticks.
 */
class ProgressMonitor
{
  public:
    /** Progress callback: (finished flows, simulation time in s) -> continue? */
    using Callback = std::function<bool(uint64_t, double)>;

    /**
     * \param flows source of the finished-flow count
     * \param callback progress callback (may be empty)
     * \param interval minimum wall time between two calls
     */
    ProgressMonitor(const FlowScheduler& flows, Callback callback, std::chrono::duration<double> interval);

    /** \brief Count one frame transmission; occasionally checks the wall clock. */
    void Tick()
    {
        if ((++m_ticks & kCheckMask) == 0 && m_callback)
        {
            Check();
        }
    }

    /** \return the number of ticks so far (frame transmissions) */
    uint64_t GetTicks() const;

    /** \return true if the callback asked to stop */
    bool IsStopped() const;

  private:
    /** \brief Read the clock and call the callback if the interval has passed. */
    void Check();

    static constexpr uint64_t kCheckMask = 1023; //!< wall clock read every 1024 ticks

    const FlowScheduler& m_flows;                    //!< finished-flow counter
    Callback m_callback;                             //!< user callback
    std::chrono::steady_clock::duration m_interval;  //!< reporting interval
    std::chrono::steady_clock::time_point m_last;    //!< last report (or start)
    uint64_t m_ticks;                                //!< frame transmissions so far
    bool m_stopped;                                  //!< stop requested
};

} // namespace cosim

#endif /* COSIM_PROGRESS_MONITOR_H */
