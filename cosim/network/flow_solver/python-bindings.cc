/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim flow solver: Python module cosim.network._flow_solver.
 */
#include "max-min-solver.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
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
}
