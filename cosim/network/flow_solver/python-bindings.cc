/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim flow solver: Python module cosim.network._flow_solver.
 */
#include "flow-simulator.h"
#include "max-min-solver.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;

namespace
{

using IntArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using FloatArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

template <typename T, typename A>
std::vector<T>
ToVector(const A& array)
{
    if (array.ndim() != 1)
    {
        throw std::invalid_argument("expected 1-D arrays");
    }
    return std::vector<T>(array.data(), array.data() + array.size());
}

py::array_t<double>
MaxMinRates(const IntArray& flowOfEntry, const IntArray& linkOfEntry, int64_t numFlows, const FloatArray& capacity)
{
    const cosim::MaxMinSolver solver(ToVector<int64_t>(flowOfEntry),
                                     ToVector<int64_t>(linkOfEntry),
                                     numFlows,
                                     ToVector<double>(capacity));
    std::vector<double> rates;
    {
        py::gil_scoped_release release;
        rates = solver.Solve();
    }
    py::array_t<double> out(static_cast<py::ssize_t>(rates.size()));
    std::copy(rates.begin(), rates.end(), out.mutable_data());
    return out;
}

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T>
const T*
Checked(const Array<T>& array, py::ssize_t size, const char* name)
{
    if (array.ndim() != 1 || (size >= 0 && array.size() != size))
    {
        throw std::invalid_argument(std::string(name) + ": expected a 1-D array of " + std::to_string(size) +
                                    " entries");
    }
    return array.data();
}

py::dict
SimulateFlows(const Array<int64_t>& routeOffsets,
              const Array<int32_t>& routeLinks,
              const Array<double>& capacity,
              const Array<double>& linkLatency,
              const Array<double>& linkBandwidth,
              const Array<int64_t>& sizeBytes,
              const Array<int64_t>& wireBytes,
              const Array<int64_t>& numPackets,
              const Array<int32_t>& payloadBytes,
              int64_t headerBytes,
              const Array<double>& earliestStart,
              const Array<int64_t>& depOffsets,
              const Array<int32_t>& depFlows,
              int64_t maxBins,
              double initialBinS,
              bool incremental,
              const py::object& progress,
              double progressIntervalS,
              double timeTolerance)
{
    if (!(timeTolerance >= 0.0 && timeTolerance < 1.0))
    {
        throw std::invalid_argument("time_tolerance must be in [0, 1)");
    }
    const py::ssize_t n = sizeBytes.size();
    const py::ssize_t links = capacity.size();
    cosim::FlowInput in;
    in.numFlows = n;
    in.numLinks = static_cast<int32_t>(links);
    in.routeOffsets = Checked(routeOffsets, n + 1, "route_offsets");
    in.routeLinks = Checked(routeLinks, in.routeOffsets[n], "route_links");
    in.capacityBps = Checked(capacity, links, "capacity");
    in.linkLatencyS = Checked(linkLatency, links, "link_latency_s");
    in.linkBandwidthBps = Checked(linkBandwidth, links, "link_bandwidth_bps");
    in.sizeBytes = Checked(sizeBytes, n, "size_bytes");
    in.wireBytes = Checked(wireBytes, n, "wire_bytes");
    in.numPackets = Checked(numPackets, n, "num_packets");
    in.payloadBytes = Checked(payloadBytes, n, "payload_per_packet");
    in.headerBytes = headerBytes;
    in.earliestStartS = Checked(earliestStart, n, "earliest_start_s");
    in.depOffsets = Checked(depOffsets, n + 1, "dep_offsets");
    in.depFlows = Checked(depFlows, in.depOffsets[n], "dep_flows");

    py::array_t<double> start(n), finish(n);
    py::array_t<int64_t> txBytes(links), txPackets(links);
    double* startPtr = start.mutable_data();
    double* finishPtr = finish.mutable_data();
    int64_t* txBytesPtr = txBytes.mutable_data();
    int64_t* txPacketsPtr = txPackets.mutable_data();
    std::unique_ptr<cosim::FlowSimulator> sim;
    bool completed = false;
    py::object error;
    {
        py::gil_scoped_release release;
        sim = std::make_unique<cosim::FlowSimulator>(in, maxBins, initialBinS, incremental, timeTolerance);
        cosim::FlowSimulator::Progress report;
        if (!progress.is_none())
        {
            report = [&](int64_t done, double t) {
                py::gil_scoped_acquire acquire;
                try
                {
                    progress(done, t);
                    return true;
                }
                catch (py::error_already_set& e)
                {
                    error = py::reinterpret_borrow<py::object>(e.value());
                    return false;
                }
            };
        }
        completed = sim->Run(startPtr, finishPtr, txBytesPtr, txPacketsPtr, report, progressIntervalS);
    }
    if (!completed)
    {
        if (error)
        {
            PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
            throw py::error_already_set();
        }
        throw std::runtime_error("flow simulation stopped");
    }
    const auto& bins = sim->Bins();
    py::array_t<double> binBytes({static_cast<py::ssize_t>(bins.Rows()), static_cast<py::ssize_t>(bins.Cols())});
    bins.CopyTo(binBytes.mutable_data());
    const auto& used = sim->UsedLinks();
    py::array_t<int32_t> usedLinks(static_cast<py::ssize_t>(used.size()));
    std::copy(used.begin(), used.end(), usedLinks.mutable_data());
    const auto& st = sim->Stats();
    py::dict stats;
    stats["rate_updates"] = st.rateUpdates;
    stats["full_solves"] = st.fullSolves;
    stats["incremental_solves"] = st.incrementalSolves;
    stats["resolved_flows"] = st.resolvedFlows;
    stats["events"] = st.events;
    stats["skipped_flows"] = st.skippedFlows;
    stats["incremental_resolved"] = st.incrementalResolved;
    stats["changed_flows"] = st.changedFlows;
    stats["coalesced_flows"] = st.coalescedFlows;
    stats["full_solve_s"] = st.fullSolveS;
    stats["incremental_solve_s"] = st.incrementalSolveS;
    py::dict out;
    out["start_s"] = start;
    out["finish_s"] = finish;
    out["tx_bytes"] = txBytes;
    out["tx_packets"] = txPackets;
    out["used_links"] = usedLinks;
    out["bin_bytes"] = binBytes;
    out["bin_s"] = bins.BinS();
    out["stats"] = stats;
    return out;
}

} // namespace

PYBIND11_MODULE(_flow_solver, m)
{
    m.doc() = "Max-min fair rate solver of cosim's flow backend.";
    m.def("max_min_rates",
          &MaxMinRates,
          "Max-min fair rates of flows (bytes/s per flow) from their (flow, link) incidences and the "
          "link capacities; raises ValueError on inconsistent input.",
          py::arg("flow_of_entry"),
          py::arg("link_of_entry"),
          py::arg("num_flows"),
          py::arg("capacity"));
    m.def("simulate_flows",
          &SimulateFlows,
          "Run the flow-level event loop (max-min fair rates, incremental re-solves) over routed flows; "
          "returns start/finish times, per-link counters, the used links' time bins and solver statistics. "
          "An exception raised by progress(done, sim_time) stops the run and is re-raised.",
          py::arg("route_offsets"),
          py::arg("route_links"),
          py::arg("capacity"),
          py::arg("link_latency_s"),
          py::arg("link_bandwidth_bps"),
          py::arg("size_bytes"),
          py::arg("wire_bytes"),
          py::arg("num_packets"),
          py::arg("payload_per_packet"),
          py::arg("header_bytes"),
          py::arg("earliest_start_s"),
          py::arg("dep_offsets"),
          py::arg("dep_flows"),
          py::arg("max_bins"),
          py::arg("initial_bin_s"),
          py::arg("incremental") = true,
          py::arg("progress") = py::none(),
          py::arg("progress_interval_s") = 0.05,
          py::arg("time_tolerance") = 0.0);
}
