/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim route engine: Python module cosim.topology._route_engine.
 */
#include "route-engine.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace py = pybind11;

namespace
{

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T>
std::vector<T>
ToVector(const Array<T>& array)
{
    if (array.ndim() != 1)
    {
        throw std::invalid_argument("expected 1-D arrays");
    }
    return std::vector<T>(array.data(), array.data() + array.size());
}

template <typename T>
py::array_t<T>
ToArray(std::vector<T>&& values)
{
    // hand the vector's buffer to numpy without a copy
    auto* owned = new std::vector<T>(std::move(values));
    py::capsule free(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(static_cast<py::ssize_t>(owned->size()), owned->data(), free);
}

py::tuple
Route(cosim::RouteEngine& engine, const Array<int32_t>& src, const Array<int32_t>& dst, const Array<int64_t>& key)
{
    const auto n = src.size();
    if (src.ndim() != 1 || dst.ndim() != 1 || key.ndim() != 1 || dst.size() != n || key.size() != n)
    {
        throw std::invalid_argument("src, dst and key must be 1-D arrays of one length");
    }
    cosim::RouteEngine::Batch batch;
    {
        py::gil_scoped_release release;
        batch = engine.Route(src.data(), dst.data(), key.data(), n);
    }
    return py::make_tuple(ToArray(std::move(batch.offsets)), ToArray(std::move(batch.links)), batch.failedFrom,
                          batch.failedTo);
}

} // namespace

PYBIND11_MODULE(_route_engine, m)
{
    m.doc() = "Compiled route computation of cosim.topology.routing (same routes as its Python rules).";
    py::class_<cosim::RouteEngine>(m, "RouteEngine")
        .def(py::init([](const Array<int64_t>& adjStart, const Array<int32_t>& adjNode, const Array<int32_t>& adjLink,
                         const Array<uint8_t>& isGpu, bool ecmpHash) {
                 return std::make_unique<cosim::RouteEngine>(ToVector(adjStart), ToVector(adjNode),
                                                             ToVector(adjLink), ToVector(isGpu), ecmpHash);
             }),
             py::arg("adj_start"),
             py::arg("adj_node"),
             py::arg("adj_link"),
             py::arg("is_gpu"),
             py::arg("ecmp_hash"))
        .def("set_gpus",
             [](cosim::RouteEngine& engine, const Array<int32_t>& gpuNode, const Array<int32_t>& domain,
                const Array<int32_t>& rail, const Array<int32_t>& firstOnRail, int32_t numRails, bool pxn) {
                 engine.SetGpus(ToVector(gpuNode), ToVector(domain), ToVector(rail), ToVector(firstOnRail), numRails,
                                pxn);
             },
             "GPU ranks (node of each rank, domain and rail indices, -1 for none), the first rank of "
             "every (domain, rail), and whether cross-rail routes use PXN relays.",
             py::arg("gpu_node"),
             py::arg("domain"),
             py::arg("rail"),
             py::arg("first_on_rail"),
             py::arg("num_rails"),
             py::arg("pxn"))
        .def("route",
             &Route,
             "Routes (CSR offsets int64, directed link ids int32, failed_from, failed_to) from GPU rank "
             "src[i] to GPU rank dst[i] with path key key[i]; failed_* are the nodes of the first "
             "unreachable leg (-1 when every route exists, and then the arrays are valid).",
             py::arg("src"),
             py::arg("dst"),
             py::arg("key"))
        .def("relay",
             &cosim::RouteEngine::Relay,
             "Node relaying the route from rank src to rank dst (PXN), -1 for a direct route.",
             py::arg("src"),
             py::arg("dst"))
        .def_property_readonly("num_nodes", &cosim::RouteEngine::NumNodes);
}
