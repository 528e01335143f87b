/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: Python module cosim.network._packet_engine.
 */
#include "engine-input.h"
#include "packet-engine.h"

#include "ns3/nstime.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace
{

/**
 * \brief Convert an array-like to a 1-D numpy array, or throw std::invalid_argument.
 * \param object the Python object
 * \param name argument name for messages
 * \return the array
 */
py::array
AsArray1d(py::handle object, const char* name)
{
    py::array array = py::array::ensure(object);
    if (!array)
    {
        throw std::invalid_argument(std::string(name) + ": expected an array");
    }
    if (array.ndim() != 1)
    {
        std::ostringstream os;
        os << name << ": expected a 1-D array, got " << array.ndim() << " dimensions";
        throw std::invalid_argument(os.str());
    }
    return array;
}

/**
 * \brief Copy an integer array-like into a vector of T, checking every value fits.
 * \param object the Python object (any integer dtype; empty arrays of any dtype)
 * \param name argument name for messages
 * \return the values
 */
template <typename T>
std::vector<T>
ToIntegerVector(py::handle object, const char* name)
{
    py::array array = AsArray1d(object, name);
    if (array.size() == 0)
    {
        return {};
    }
    const char kind = array.dtype().kind();
    if (kind != 'i' && kind != 'u')
    {
        throw std::invalid_argument(std::string(name) + ": expected an integer array, got dtype " +
                                    py::str(array.dtype()).cast<std::string>());
    }
    auto values = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(array);
    if (!values)
    {
        throw std::invalid_argument(std::string(name) + ": cannot convert to int64");
    }
    std::vector<T> out(static_cast<size_t>(values.size()));
    const int64_t* data = values.data();
    for (size_t i = 0; i < out.size(); ++i)
    {
        if (data[i] < std::numeric_limits<T>::min() || data[i] > std::numeric_limits<T>::max())
        {
            std::ostringstream os;
            os << name << "[" << i << "] = " << data[i] << " does not fit in "
               << (sizeof(T) == 4 ? "int32" : "int64");
            throw std::invalid_argument(os.str());
        }
        out[i] = static_cast<T>(data[i]);
    }
    return out;
}

/**
 * \brief Copy a real array-like into a vector of double.
 * \param object the Python object (float or integer dtype)
 * \param name argument name for messages
 * \return the values
 */
std::vector<double>
ToDoubleVector(py::handle object, const char* name)
{
    py::array array = AsArray1d(object, name);
    if (array.size() == 0)
    {
        return {};
    }
    const char kind = array.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u')
    {
        throw std::invalid_argument(std::string(name) + ": expected a float array, got dtype " +
                                    py::str(array.dtype()).cast<std::string>());
    }
    auto values = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(array);
    if (!values)
    {
        throw std::invalid_argument(std::string(name) + ": cannot convert to float64");
    }
    return std::vector<double>(values.data(), values.data() + values.size());
}

/**
 * \param values the values
 * \return a new 1-D numpy array holding a copy
 */
template <typename T>
py::array_t<T>
ToNumpy(const std::vector<T>& values)
{
    py::array_t<T> array(static_cast<py::ssize_t>(values.size()));
    if (!values.empty())
    {
        std::memcpy(array.mutable_data(), values.data(), values.size() * sizeof(T));
    }
    return array;
}

/** \brief Python entry point; see the module docstring. */
py::dict
Run(int64_t nNodes,
    py::handle linkNodeA,
    py::handle linkNodeB,
    py::handle linkRateBps,
    py::handle linkDelayS,
    py::handle flowSrc,
    py::handle flowDst,
    py::handle flowBytes,
    py::handle flowEarliestStartS,
    py::handle flowPayloadPerPacket,
    py::handle routeOffsets,
    py::handle routeLinks,
    py::handle depOffsets,
    py::handle depFlows,
    int64_t headerBytes,
    int64_t pfcXoffBytes,
    int64_t pfcXonBytes,
    int64_t maxBins,
    py::object progress)
{
    cosim::EngineInput input;
    input.nNodes = nNodes;
    input.linkNodeA = ToIntegerVector<int32_t>(linkNodeA, "link_node_a");
    input.linkNodeB = ToIntegerVector<int32_t>(linkNodeB, "link_node_b");
    input.linkRateBps = ToDoubleVector(linkRateBps, "link_rate_bps");
    input.linkDelayS = ToDoubleVector(linkDelayS, "link_delay_s");
    input.flowSrc = ToIntegerVector<int32_t>(flowSrc, "flow_src");
    input.flowDst = ToIntegerVector<int32_t>(flowDst, "flow_dst");
    input.flowBytes = ToIntegerVector<int64_t>(flowBytes, "flow_bytes");
    input.flowEarliestStartS = ToDoubleVector(flowEarliestStartS, "flow_earliest_start_s");
    input.flowPayloadPerPacket = ToIntegerVector<int32_t>(flowPayloadPerPacket, "flow_payload_per_packet");
    input.routeOffsets = ToIntegerVector<int64_t>(routeOffsets, "route_offsets");
    input.routeLinks = ToIntegerVector<int32_t>(routeLinks, "route_links");
    input.depOffsets = ToIntegerVector<int64_t>(depOffsets, "dep_offsets");
    input.depFlows = ToIntegerVector<int32_t>(depFlows, "dep_flows");
    input.headerBytes = headerBytes;
    input.pfcXoffBytes = pfcXoffBytes;
    input.pfcXonBytes = pfcXonBytes;
    input.maxBins = maxBins;
    if (!progress.is_none() && !PyCallable_Check(progress.ptr()))
    {
        throw std::invalid_argument("progress: expected a callable or None");
    }

    cosim::PacketEngine engine(input); // validates; creates no ns-3 object

    // Called by the engine with the GIL released: reacquire it, check for signals
    // (Ctrl-C) and call the user's callback. Any Python exception stops the run and is
    // re-raised once the simulator has been destroyed.
    std::exception_ptr pending;
    auto callback = [&progress, &pending](uint64_t finished, double simTime) -> bool {
        py::gil_scoped_acquire gil;
        try
        {
            if (PyErr_CheckSignals() != 0)
            {
                throw py::error_already_set();
            }
            if (!progress.is_none())
            {
                progress(finished, simTime);
            }
            return true;
        }
        catch (...)
        {
            pending = std::current_exception();
            return false;
        }
    };

    cosim::EngineResult result;
    {
        py::gil_scoped_release release;
        result = engine.Run(callback);
    }
    if (pending)
    {
        std::rethrow_exception(pending);
    }

    const auto nDirected = static_cast<py::ssize_t>(result.linkTxBytes.size());
    const auto nBins = static_cast<py::ssize_t>(result.nBins);
    py::array_t<int64_t> binBytes({nDirected, nBins});
    if (!result.linkBinBytes.empty())
    {
        std::memcpy(binBytes.mutable_data(), result.linkBinBytes.data(),
                    result.linkBinBytes.size() * sizeof(int64_t));
    }

    py::dict out;
    out["flow_start_s"] = ToNumpy(result.flowStartS);
    out["flow_finish_s"] = ToNumpy(result.flowFinishS);
    out["link_tx_bytes"] = ToNumpy(result.linkTxBytes);
    out["link_tx_packets"] = ToNumpy(result.linkTxPackets);
    out["link_peak_queue_bytes"] = ToNumpy(result.linkPeakQueueBytes);
    out["link_pause_count"] = ToNumpy(result.linkPauseCount);
    out["link_paused_s"] = ToNumpy(result.linkPausedS);
    out["bin_s"] = result.binS;
    out["link_bin_bytes"] = binBytes;
    out["end_time_s"] = result.endTimeS;
    out["hop_packets"] = result.hopPackets;
    out["events"] = result.events;
    out["wall_s"] = result.wallS;
    return out;
}

constexpr const char* kRunDoc = R"doc(
Simulate source-routed, PFC-lossless flows packet by packet on ns-3 (point-to-point links).

Links are undirected and full duplex: directed link 2*i goes link_node_a[i] -> link_node_b[i],
2*i+1 the other way. Flow f's route is route_links[route_offsets[f]:route_offsets[f+1]]
(directed link ids, src to dst); it starts at max(flow_earliest_start_s[f], finish of
dep_flows[dep_offsets[f]:dep_offsets[f+1]]). Each frame is payload + header_bytes on the wire
(header_bytes includes the 2-byte PPP header). Per ingress port, upstream is paused when the
backlog exceeds pfc_xoff_bytes and resumed when it falls to pfc_xon_bytes.

progress(n_finished_flows, sim_time_s) is called at most every ~0.2 s of wall time; an
exception raised there (or a pending KeyboardInterrupt) stops the simulation and is re-raised.

Raises ValueError for invalid input (checked before anything is simulated) and RuntimeError if
flows cannot complete (PFC deadlock). Returns a dict of numpy arrays and scalars: flow_start_s,
flow_finish_s, link_tx_bytes, link_tx_packets, link_peak_queue_bytes, link_pause_count,
link_paused_s (per directed link), bin_s, link_bin_bytes [2L, n_bins], end_time_s,
hop_packets, events, wall_s.
)doc";

} // namespace

PYBIND11_MODULE(_packet_engine, m)
{
    // Once per process, before any simulation: 1 ns is too coarse at 400 Gb/s.
    if (ns3::Time::GetResolution() != ns3::Time::PS)
    {
        ns3::Time::SetResolution(ns3::Time::PS);
    }
    m.doc() = "Packet-level network engine of cosim, built on ns-3 " "3.44" " (GPL-2.0-only).";
    m.def("run",
          &Run,
          kRunDoc,
          py::arg("n_nodes"),
          py::arg("link_node_a"),
          py::arg("link_node_b"),
          py::arg("link_rate_bps"),
          py::arg("link_delay_s"),
          py::arg("flow_src"),
          py::arg("flow_dst"),
          py::arg("flow_bytes"),
          py::arg("flow_earliest_start_s"),
          py::arg("flow_payload_per_packet"),
          py::arg("route_offsets"),
          py::arg("route_links"),
          py::arg("dep_offsets"),
          py::arg("dep_flows"),
          py::arg("header_bytes"),
          py::arg("pfc_xoff_bytes"),
          py::arg("pfc_xon_bytes"),
          py::arg("max_bins"),
          py::arg("progress") = py::none());
    m.attr("NS3_VERSION") = "3.44";
}
