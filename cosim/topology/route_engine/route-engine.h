/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim route engine: deterministic shortest-path routes with per-switch ECMP hashing.
 */
#ifndef COSIM_ROUTE_ENGINE_H
#define COSIM_ROUTE_ENGINE_H

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace cosim
{

/**
 * \brief Routes between nodes of an undirected graph whose GPUs are endpoints, not transit nodes.
 *
 * The rules are those of cosim.topology.routing.Router, bit for bit: a route from a to b walks
 * down the hop distances to b (computed by a breadth-first search from b that reaches GPUs but
 * does not cross them); at every node u the candidates are the neighbours one hop closer to b
 * (b itself or a non-GPU node) in increasing node order; with ECMP hashing and several
 * candidates the next hop is candidates[crc32("a,b,key,u") % count] (zlib's CRC-32 of the decimal
 * string), otherwise the first candidate. A route may go through one relay node (PXN): the two
 * legs a->via and via->b are routed (and hashed) independently and joined.
 *
 * Distances towards a target are cached per target (bounded); batch routing groups the routes by
 * target and, for targets with many routes, lists every node's candidates once (one pass over
 * the edges) instead of scanning neighbours at every hop.
 */
class RouteEngine
{
  public:
    /**
     * \param adjStart CSR offsets of the adjacency (numNodes + 1 entries)
     * \param adjNode neighbours of every node, in increasing order
     * \param adjLink directed link id of the edge from the node to each neighbour
     * \param isGpu 1 for GPU nodes
     * \param ecmpHash hash among equal-cost candidates (else always the first)
     * Throws std::invalid_argument on inconsistent input.
     */
    RouteEngine(std::vector<int64_t> adjStart,
                std::vector<int32_t> adjNode,
                std::vector<int32_t> adjLink,
                std::vector<uint8_t> isGpu,
                bool ecmpHash);

    /**
     * GPU ranks and the PXN relays. ``gpuNode[r]`` is the node of rank r; ``domain[r]`` and
     * ``rail[r]`` index its scale-up domain and rail (-1 when the GPU has no domain or no rail);
     * ``firstOnRail[d * numRails + q]`` is the first rank of domain d on rail q (-1: none). With
     * ``pxn``, a route between ranks of different domains and rails goes through the source
     * domain's first rank on the destination's rail when that GPU shares a non-GPU neighbour
     * with the source and is not adjacent to it (its BFS distance to the source is 2).
     */
    void SetGpus(std::vector<int32_t> gpuNode,
                 std::vector<int32_t> domain,
                 std::vector<int32_t> rail,
                 std::vector<int32_t> firstOnRail,
                 int32_t numRails,
                 bool pxn);

    /** Outcome of a batch: CSR of directed link ids; failedFrom/failedTo name an unreachable leg. */
    struct Batch
    {
        std::vector<int64_t> offsets;
        std::vector<int32_t> links;
        int32_t failedFrom = -1;
        int32_t failedTo = -1;
    };

    /**
     * Routes from GPU rank src[i] to GPU rank dst[i] with path key key[i] (through the PXN relay
     * where the policy asks for one). A route whose source is its destination is empty.
     */
    Batch Route(const int32_t* src, const int32_t* dst, const int64_t* key, int64_t count);

    /** Node relaying the route from rank src to rank dst (PXN), or -1 for a direct route. */
    int32_t Relay(int32_t src, int32_t dst) const;

    int32_t NumNodes() const { return m_numNodes; }

  private:
    /** One leg to route: from node a to node b (the hash uses both ends of the leg). */
    struct Leg
    {
        int32_t a;
        int32_t b;
        int64_t key;
    };

    bool Adjacent(int32_t u, int32_t v) const;

    const std::vector<uint16_t>& DistancesTo(int32_t target);
    void ComputeDistances(int32_t target, std::vector<uint16_t>& dist) const;
    void BuildCandidates(int32_t target, const std::vector<uint16_t>& dist);
    bool WalkLeg(const Leg& leg, const std::vector<uint16_t>& dist, bool useCandidates, std::vector<int32_t>& out);
    uint32_t Hash(int32_t a, int32_t b, int64_t key, int32_t u) const;

    int32_t m_numNodes;
    std::vector<int64_t> m_adjStart;
    std::vector<int32_t> m_adjNode;
    std::vector<int32_t> m_adjLink;
    std::vector<uint8_t> m_isGpu;
    bool m_ecmpHash;
    std::vector<int64_t> m_fabricStart; //!< CSR of the non-GPU neighbours (positions into m_adjNode)
    std::vector<int64_t> m_fabricPos;
    std::unordered_map<int32_t, std::vector<uint16_t>> m_distCache;
    std::vector<uint16_t> m_scratchDist;
    std::vector<int64_t> m_candStart; //!< per-target candidates (positions into m_adjNode)
    std::vector<int64_t> m_candPos;
    std::vector<int64_t> m_scan; //!< candidates of one hop when they are not listed
    uint32_t m_crcTable[256];
    std::vector<int32_t> m_gpuNode;
    std::vector<int32_t> m_domain;
    std::vector<int32_t> m_rail;
    std::vector<int32_t> m_firstOnRail;
    int32_t m_numRails = 0;
    bool m_pxn = false;
};

} // namespace cosim

#endif // COSIM_ROUTE_ENGINE_H
