/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: validation of untrusted simulation input.
 */
#ifndef COSIM_INPUT_VALIDATOR_H
#define COSIM_INPUT_VALIDATOR_H

#include "engine-input.h"

namespace cosim
{

/**
 * \ingroup cosim-packet-engine
 * \brief Largest simulated time span accepted (s).
 *
 * ns-3 time is a signed 64-bit count of picoseconds (about 9.2e6 s); staying an order of
 * magnitude below keeps every Simulator::Schedule() delay positive and overflow free.
 */
constexpr double kMaxSimulatedSeconds = 1.0e6;

/** \ingroup cosim-packet-engine
 *  \brief Largest frame (payload + header bytes) a PointToPointNetDevice accepts (its Mtu is a uint16). */
constexpr int64_t kMaxFrameBytes = 65535;

/** \ingroup cosim-packet-engine
 *  \brief Size of the PPP header PointToPointNetDevice adds to each frame. */
constexpr int64_t kPppHeaderBytes = 2;

/**
 * \ingroup cosim-packet-engine
 * \brief Check an EngineInput completely, before any ns-3 object exists.
 *
 * Every condition that could otherwise reach an NS_ASSERT / NS_FATAL_ERROR inside ns-3
 * (and abort the process) is rejected here. Checked: array lengths, node and link indices,
 * rates (finite, >= 1 bit/s since ns-3 rates are integral), delays and start times
 * (finite, >= 0, bounded), payload sizes, header size, route contiguity (and no directed
 * link used twice by one route, since forwarding identifies the hop by the incoming link),
 * dependency indices and acyclicity, PFC thresholds, max_bins, and a conservative bound on
 * the simulated duration.
 *
 * \param input the input to check
 * \throws std::invalid_argument naming the offending argument and index
 */
void ValidateEngineInput(const EngineInput& input);

} // namespace cosim

#endif /* COSIM_INPUT_VALIDATOR_H */
