/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "input-validator.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cosim
{

namespace
{

/**
 * \brief Build a message from stream-able parts and throw it as std::invalid_argument.
 * \param parts message fragments
 */
template <typename... Parts>
[[noreturn]] void
Fail(const Parts&... parts)
{
    std::ostringstream os;
    (os << ... << parts);
    throw std::invalid_argument(os.str());
}

/**
 * \brief Require an array to have the expected length.
 * \param name argument name
 * \param actual actual length
 * \param expected expected length
 * \param reference what the expected length is derived from
 */
void
CheckLength(const char* name, size_t actual, size_t expected, const char* reference)
{
    if (actual != expected)
    {
        Fail(name, ": expected length ", expected, " (", reference, "), got ", actual);
    }
}

/**
 * \brief Check a CSR offsets array against the array it indexes.
 * \param name argument name of the offsets
 * \param offsets the offsets (already known to have F+1 entries)
 * \param valuesName argument name of the indexed array
 * \param nValues length of the indexed array
 */
void
CheckOffsets(const char* name,
             const std::vector<int64_t>& offsets,
             const char* valuesName,
             size_t nValues)
{
    if (offsets.front() != 0)
    {
        Fail(name, "[0] = ", offsets.front(), ", expected 0");
    }
    for (size_t f = 0; f + 1 < offsets.size(); ++f)
    {
        if (offsets[f + 1] < offsets[f])
        {
            Fail(name, "[", f + 1, "] = ", offsets[f + 1], " is smaller than ", name, "[", f,
                 "] = ", offsets[f], " (offsets must be non-decreasing)");
        }
    }
    if (offsets.back() != static_cast<int64_t>(nValues))
    {
        Fail(name, "[", offsets.size() - 1, "] = ", offsets.back(), ", expected len(", valuesName,
             ") = ", nValues);
    }
}

/**
 * \brief Check that a time in seconds is finite, non-negative and bounded.
 * \param name argument name
 * \param index array index
 * \param value the value
 */
void
CheckTime(const char* name, size_t index, double value)
{
    if (!std::isfinite(value) || value < 0 || value > kMaxSimulatedSeconds)
    {
        Fail(name, "[", index, "] = ", value, " must be finite and in [0, ", kMaxSimulatedSeconds,
             "] s");
    }
}

void
ValidateLinks(const EngineInput& in)
{
    const size_t nLinks = in.linkNodeA.size();
    CheckLength("link_node_b", in.linkNodeB.size(), nLinks, "len(link_node_a)");
    CheckLength("link_rate_bps", in.linkRateBps.size(), nLinks, "len(link_node_a)");
    CheckLength("link_delay_s", in.linkDelayS.size(), nLinks, "len(link_node_a)");
    if (2 * static_cast<uint64_t>(nLinks) > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
    {
        Fail("link_node_a: too many links (", nLinks, "); directed link ids must fit in int32");
    }
    for (size_t i = 0; i < nLinks; ++i)
    {
        const int32_t a = in.linkNodeA[i];
        const int32_t b = in.linkNodeB[i];
        if (a < 0 || a >= in.nNodes)
        {
            Fail("link_node_a[", i, "] = ", a, " is out of range [0, ", in.nNodes, ")");
        }
        if (b < 0 || b >= in.nNodes)
        {
            Fail("link_node_b[", i, "] = ", b, " is out of range [0, ", in.nNodes, ")");
        }
        if (a == b)
        {
            Fail("link ", i, " connects node ", a, " to itself");
        }
        const double rate = in.linkRateBps[i];
        // ns-3 DataRate is an integer number of bit/s.
        if (!std::isfinite(rate) || rate < 1.0 || rate > 1.0e18)
        {
            Fail("link_rate_bps[", i, "] = ", rate, " must be finite and in [1, 1e18] bit/s");
        }
        CheckTime("link_delay_s", i, in.linkDelayS[i]);
    }
}

void
ValidateFlows(const EngineInput& in)
{
    const size_t nFlows = in.flowSrc.size();
    CheckLength("flow_dst", in.flowDst.size(), nFlows, "len(flow_src)");
    CheckLength("flow_bytes", in.flowBytes.size(), nFlows, "len(flow_src)");
    CheckLength("flow_earliest_start_s", in.flowEarliestStartS.size(), nFlows, "len(flow_src)");
    CheckLength("flow_payload_per_packet", in.flowPayloadPerPacket.size(), nFlows, "len(flow_src)");
    CheckLength("route_offsets", in.routeOffsets.size(), nFlows + 1, "len(flow_src) + 1");
    CheckLength("dep_offsets", in.depOffsets.size(), nFlows + 1, "len(flow_src) + 1");
    if (nFlows > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    {
        Fail("flow_src: too many flows (", nFlows, "); flow ids must fit in int32");
    }
    const int64_t maxPayload = kMaxFrameBytes - in.headerBytes;
    for (size_t f = 0; f < nFlows; ++f)
    {
        const int32_t src = in.flowSrc[f];
        const int32_t dst = in.flowDst[f];
        if (src < 0 || src >= in.nNodes)
        {
            Fail("flow_src[", f, "] = ", src, " is out of range [0, ", in.nNodes, ")");
        }
        if (dst < 0 || dst >= in.nNodes)
        {
            Fail("flow_dst[", f, "] = ", dst, " is out of range [0, ", in.nNodes, ")");
        }
        if (in.flowBytes[f] < 0)
        {
            Fail("flow_bytes[", f, "] = ", in.flowBytes[f], " is negative");
        }
        if (in.flowBytes[f] > 0 && src == dst)
        {
            Fail("flow ", f, ": src == dst == ", src, " but flow_bytes[", f, "] = ", in.flowBytes[f],
                 " > 0");
        }
        CheckTime("flow_earliest_start_s", f, in.flowEarliestStartS[f]);
        const int32_t payload = in.flowPayloadPerPacket[f];
        if (payload < 1 || payload > maxPayload)
        {
            Fail("flow_payload_per_packet[", f, "] = ", payload, " is out of range [1, ", maxPayload,
                 "] (65535 - header_bytes)");
        }
    }
}

void
ValidateRoutes(const EngineInput& in)
{
    const size_t nFlows = in.flowSrc.size();
    const int64_t nDirected = 2 * static_cast<int64_t>(in.linkNodeA.size());
    CheckOffsets("route_offsets", in.routeOffsets, "route_links", in.routeLinks.size());
    for (size_t k = 0; k < in.routeLinks.size(); ++k)
    {
        if (in.routeLinks[k] < 0 || in.routeLinks[k] >= nDirected)
        {
            Fail("route_links[", k, "] = ", in.routeLinks[k], " is out of range [0, ", nDirected,
                 ") (directed link ids)");
        }
    }
    // lastUse[d] = 1 + the last flow whose route used directed link d (detects repeats).
    std::vector<uint32_t> lastUse(static_cast<size_t>(nDirected), 0);
    for (size_t f = 0; f < nFlows; ++f)
    {
        const int64_t begin = in.routeOffsets[f];
        const int64_t end = in.routeOffsets[f + 1];
        if (begin == end)
        {
            if (in.flowBytes[f] > 0)
            {
                Fail("route of flow ", f, " is empty but the flow carries ", in.flowBytes[f],
                     " bytes from node ", in.flowSrc[f], " to node ", in.flowDst[f]);
            }
            continue; // a 0-byte flow needs no route
        }
        int32_t at = in.flowSrc[f];
        for (int64_t k = begin; k < end; ++k)
        {
            const auto link = static_cast<uint32_t>(in.routeLinks[k]);
            if (in.GetLinkSource(link) != at)
            {
                Fail("route of flow ", f, ": link ", link, " starts at node ", in.GetLinkSource(link),
                     ", expected node ", at);
            }
            if (lastUse[link] == f + 1)
            {
                Fail("route of flow ", f, ": directed link ", link, " is used more than once");
            }
            lastUse[link] = static_cast<uint32_t>(f + 1);
            at = in.GetLinkDestination(link);
        }
        if (at != in.flowDst[f])
        {
            Fail("route of flow ", f, ": ends at node ", at, ", expected flow_dst[", f,
                 "] = ", in.flowDst[f]);
        }
    }
}

void
ValidateDependencies(const EngineInput& in)
{
    const size_t nFlows = in.flowSrc.size();
    CheckOffsets("dep_offsets", in.depOffsets, "dep_flows", in.depFlows.size());
    for (size_t f = 0; f < nFlows; ++f)
    {
        for (int64_t k = in.depOffsets[f]; k < in.depOffsets[f + 1]; ++k)
        {
            const int64_t dep = DependencyFlow(in.depFlows[k]);
            if (static_cast<size_t>(dep) >= nFlows)
            {
                Fail("dep_flows[", k, "] (dependency of flow ", f, ") = ", in.depFlows[k],
                     " refers to flow ", dep, ", out of range [0, ", nFlows,
                     ") (k = after flow k received, -k-1 = after flow k sent)");
            }
            if (static_cast<size_t>(dep) == f)
            {
                Fail("dep_flows[", k, "]: flow ", f, " depends on itself");
            }
        }
    }
    // Kahn's algorithm on the dependency graph (edge dep -> dependent).
    std::vector<int64_t> pending(nFlows);
    std::vector<int64_t> childOffsets(nFlows + 1, 0);
    for (size_t f = 0; f < nFlows; ++f)
    {
        pending[f] = in.depOffsets[f + 1] - in.depOffsets[f];
        for (int64_t k = in.depOffsets[f]; k < in.depOffsets[f + 1]; ++k)
        {
            ++childOffsets[DependencyFlow(in.depFlows[k]) + 1];
        }
    }
    for (size_t f = 0; f < nFlows; ++f)
    {
        childOffsets[f + 1] += childOffsets[f];
    }
    std::vector<uint32_t> children(in.depFlows.size());
    std::vector<int64_t> fill(childOffsets.begin(), childOffsets.end() - 1);
    for (size_t f = 0; f < nFlows; ++f)
    {
        for (int64_t k = in.depOffsets[f]; k < in.depOffsets[f + 1]; ++k)
        {
            children[fill[DependencyFlow(in.depFlows[k])]++] = static_cast<uint32_t>(f);
        }
    }
    std::vector<uint32_t> ready;
    for (size_t f = 0; f < nFlows; ++f)
    {
        if (pending[f] == 0)
        {
            ready.push_back(static_cast<uint32_t>(f));
        }
    }
    size_t done = 0;
    while (!ready.empty())
    {
        const uint32_t f = ready.back();
        ready.pop_back();
        ++done;
        for (int64_t k = childOffsets[f]; k < childOffsets[f + 1]; ++k)
        {
            if (--pending[children[k]] == 0)
            {
                ready.push_back(children[k]);
            }
        }
    }
    if (done == nFlows)
    {
        return;
    }
    // Walk unresolved dependencies until a flow repeats: that flow lies on a cycle.
    size_t f = 0;
    while (pending[f] == 0)
    {
        ++f;
    }
    std::vector<bool> seen(nFlows, false);
    while (!seen[f])
    {
        seen[f] = true;
        for (int64_t k = in.depOffsets[f]; k < in.depOffsets[f + 1]; ++k)
        {
            if (pending[DependencyFlow(in.depFlows[k])] > 0)
            {
                f = static_cast<size_t>(DependencyFlow(in.depFlows[k]));
                break;
            }
        }
    }
    Fail("dep_flows: dependencies are not a DAG; flow ", f, " is on a dependency cycle");
}

/**
 * \brief Reject workloads whose simulated duration could overflow ns-3 time.
 *
 * Heuristic upper bound: the latest earliest start, plus the serialization of all frames of
 * all flows on every hop back to back, plus twice the propagation delay of every hop of
 * every flow. Its limit is an order of magnitude below the int64 picosecond range.
 */
void
ValidateHorizon(const EngineInput& in)
{
    double bound = 0;
    for (size_t f = 0; f < in.flowSrc.size(); ++f)
    {
        bound = std::max(bound, in.flowEarliestStartS[f]);
    }
    for (size_t f = 0; f < in.flowSrc.size(); ++f)
    {
        const double bytes = static_cast<double>(in.flowBytes[f]);
        const double packets = std::ceil(bytes / in.flowPayloadPerPacket[f]);
        const double wireBits = 8.0 * (bytes + packets * static_cast<double>(in.headerBytes));
        for (int64_t k = in.routeOffsets[f]; k < in.routeOffsets[f + 1]; ++k)
        {
            const uint32_t link = static_cast<uint32_t>(in.routeLinks[k]) / 2;
            bound += wireBits / in.linkRateBps[link] + 2.0 * in.linkDelayS[link];
        }
    }
    if (!(bound <= kMaxSimulatedSeconds))
    {
        Fail("workload too long: a conservative bound on the simulated duration is ", bound,
             " s, above the supported ", kMaxSimulatedSeconds,
             " s (ns-3 picosecond clock); check flow_bytes and link_rate_bps");
    }
}

} // namespace

void
ValidateEngineInput(const EngineInput& in)
{
    if (in.nNodes < 1 || in.nNodes > std::numeric_limits<int32_t>::max())
    {
        Fail("n_nodes = ", in.nNodes, " is out of range [1, ", std::numeric_limits<int32_t>::max(), "]");
    }
    if (in.headerBytes < kPppHeaderBytes || in.headerBytes > 1024)
    {
        Fail("header_bytes = ", in.headerBytes,
             " is out of range [2, 1024] (it must include the 2-byte PPP header)");
    }
    if (in.pfcXonBytes < 0)
    {
        Fail("pfc_xon_bytes = ", in.pfcXonBytes, " is negative");
    }
    if (in.pfcXoffBytes <= in.pfcXonBytes)
    {
        Fail("pfc_xoff_bytes = ", in.pfcXoffBytes, " must be greater than pfc_xon_bytes = ",
             in.pfcXonBytes);
    }
    if (in.maxBins < 1)
    {
        Fail("max_bins = ", in.maxBins, " must be >= 1");
    }
    ValidateLinks(in);
    ValidateFlows(in);
    ValidateRoutes(in);
    ValidateDependencies(in);
    ValidateHorizon(in);
}

} // namespace cosim
