/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim route engine: deterministic shortest-path routes with per-switch ECMP hashing.
 */
#include "route-engine.h"

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <string>

namespace cosim
{

namespace
{

constexpr uint16_t kUnreachable = 0xFFFF;
//! Most bytes of cached distance arrays (beyond it, distances are recomputed per batch).
constexpr size_t kDistCacheBytes = size_t(64) << 20;
//! Targets with at least this many legs in a batch get their candidates listed once.
constexpr int64_t kCandidateListLegs = 16;

} // namespace

RouteEngine::RouteEngine(std::vector<int64_t> adjStart,
                         std::vector<int32_t> adjNode,
                         std::vector<int32_t> adjLink,
                         std::vector<uint8_t> isGpu,
                         bool ecmpHash)
    : m_numNodes(static_cast<int32_t>(isGpu.size())),
      m_adjStart(std::move(adjStart)),
      m_adjNode(std::move(adjNode)),
      m_adjLink(std::move(adjLink)),
      m_isGpu(std::move(isGpu)),
      m_ecmpHash(ecmpHash)
{
    if (m_adjStart.size() != static_cast<size_t>(m_numNodes) + 1 || m_adjStart.front() != 0 ||
        m_adjStart.back() != static_cast<int64_t>(m_adjNode.size()) || m_adjLink.size() != m_adjNode.size())
    {
        throw std::invalid_argument("adjacency arrays are inconsistent");
    }
    for (int32_t u = 0; u < m_numNodes; ++u)
    {
        if (m_adjStart[u + 1] < m_adjStart[u])
        {
            throw std::invalid_argument("adjacency offsets must not decrease");
        }
        for (int64_t p = m_adjStart[u]; p < m_adjStart[u + 1]; ++p)
        {
            const int32_t v = m_adjNode[p];
            if (v < 0 || v >= m_numNodes || (p > m_adjStart[u] && m_adjNode[p - 1] >= v))
            {
                throw std::invalid_argument("neighbours of node " + std::to_string(u) +
                                            " must be valid node ids in increasing order");
            }
        }
    }
    m_fabricStart.assign(m_numNodes + 1, 0);
    for (int32_t u = 0; u < m_numNodes; ++u)
    {
        for (int64_t p = m_adjStart[u]; p < m_adjStart[u + 1]; ++p)
        {
            if (!m_isGpu[m_adjNode[p]])
            {
                m_fabricPos.push_back(p);
            }
        }
        m_fabricStart[u + 1] = static_cast<int64_t>(m_fabricPos.size());
    }
    for (uint32_t i = 0; i < 256; ++i)
    {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k)
        {
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        m_crcTable[i] = c;
    }
}

uint32_t
RouteEngine::Hash(int32_t a, int32_t b, int64_t key, int32_t u) const
{
    // zlib.crc32 of the ASCII string "a,b,key,u"
    char buf[96];
    char* p = buf;
    char* end = buf + sizeof(buf);
    p = std::to_chars(p, end, a).ptr;
    *p++ = ',';
    p = std::to_chars(p, end, b).ptr;
    *p++ = ',';
    p = std::to_chars(p, end, key).ptr;
    *p++ = ',';
    p = std::to_chars(p, end, u).ptr;
    uint32_t c = 0xFFFFFFFFu;
    for (const char* q = buf; q < p; ++q)
    {
        c = m_crcTable[(c ^ static_cast<uint8_t>(*q)) & 0xFF] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFu;
}

void
RouteEngine::ComputeDistances(int32_t target, std::vector<uint16_t>& dist) const
{
    dist.assign(m_numNodes, kUnreachable);
    std::vector<int32_t> queue;
    queue.reserve(m_numNodes);
    dist[target] = 0;
    queue.push_back(target);
    for (size_t head = 0; head < queue.size(); ++head)
    {
        const int32_t u = queue[head];
        if (m_isGpu[u] && u != target)
        {
            continue; // a GPU is reached but not crossed
        }
        const uint16_t next = static_cast<uint16_t>(dist[u] + 1);
        for (int64_t p = m_adjStart[u]; p < m_adjStart[u + 1]; ++p)
        {
            const int32_t v = m_adjNode[p];
            if (dist[v] == kUnreachable)
            {
                dist[v] = next;
                queue.push_back(v);
            }
        }
    }
}

const std::vector<uint16_t>&
RouteEngine::DistancesTo(int32_t target)
{
    auto hit = m_distCache.find(target);
    if (hit != m_distCache.end())
    {
        return hit->second;
    }
    if ((m_distCache.size() + 1) * static_cast<size_t>(m_numNodes) * sizeof(uint16_t) <= kDistCacheBytes)
    {
        auto& dist = m_distCache[target];
        ComputeDistances(target, dist);
        return dist;
    }
    ComputeDistances(target, m_scratchDist);
    return m_scratchDist;
}

void
RouteEngine::BuildCandidates(int32_t target, const std::vector<uint16_t>& dist)
{
    m_candStart.assign(m_numNodes + 1, 0);
    m_candPos.clear();
    for (int32_t u = 0; u < m_numNodes; ++u)
    {
        const uint16_t k = dist[u];
        if (k != kUnreachable && u != target)
        {
            for (int64_t p = m_adjStart[u]; p < m_adjStart[u + 1]; ++p)
            {
                const int32_t v = m_adjNode[p];
                if (dist[v] + 1 == k && (v == target || !m_isGpu[v]))
                {
                    m_candPos.push_back(p);
                }
            }
        }
        m_candStart[u + 1] = static_cast<int64_t>(m_candPos.size());
    }
}

bool
RouteEngine::WalkLeg(const Leg& leg, const std::vector<uint16_t>& dist, bool useCandidates, std::vector<int32_t>& out)
{
    const int32_t b = leg.b;
    int32_t u = leg.a;
    if (dist[u] == kUnreachable)
    {
        return false;
    }
    while (u != b)
    {
        const uint16_t k = dist[u];
        const int64_t* cand;
        int64_t count;
        if (useCandidates)
        {
            cand = m_candPos.data() + m_candStart[u];
            count = m_candStart[u + 1] - m_candStart[u];
        }
        else
        {
            m_scan.clear();
            if (k == 1)
            {
                // only the target is at distance 0
                const auto first = m_adjNode.begin() + m_adjStart[u];
                const auto last = m_adjNode.begin() + m_adjStart[u + 1];
                m_scan.push_back(std::lower_bound(first, last, b) - m_adjNode.begin());
            }
            else
            {
                for (int64_t i = m_fabricStart[u]; i < m_fabricStart[u + 1]; ++i)
                {
                    const int64_t p = m_fabricPos[i];
                    if (dist[m_adjNode[p]] + 1 == k)
                    {
                        m_scan.push_back(p);
                    }
                }
            }
            cand = m_scan.data();
            count = static_cast<int64_t>(m_scan.size());
        }
        int64_t pick = 0;
        if (m_ecmpHash && count > 1)
        {
            pick = static_cast<int64_t>(Hash(leg.a, b, leg.key, u) % static_cast<uint32_t>(count));
        }
        const int64_t p = cand[pick];
        out.push_back(m_adjLink[p]);
        u = m_adjNode[p];
    }
    return true;
}

void
RouteEngine::SetGpus(std::vector<int32_t> gpuNode,
                     std::vector<int32_t> domain,
                     std::vector<int32_t> rail,
                     std::vector<int32_t> firstOnRail,
                     int32_t numRails,
                     bool pxn)
{
    const size_t g = gpuNode.size();
    if (domain.size() != g || rail.size() != g || numRails < 0)
    {
        throw std::invalid_argument("GPU arrays differ in length");
    }
    int32_t numDomains = 0;
    for (size_t r = 0; r < g; ++r)
    {
        if (gpuNode[r] < 0 || gpuNode[r] >= m_numNodes || !m_isGpu[gpuNode[r]])
        {
            throw std::invalid_argument("rank " + std::to_string(r) + " is not a GPU node");
        }
        if ((domain[r] < 0) != (rail[r] < 0) || rail[r] >= numRails)
        {
            throw std::invalid_argument("rank " + std::to_string(r) + ": domain and rail out of range");
        }
        numDomains = std::max(numDomains, domain[r] + 1);
    }
    if (firstOnRail.size() != static_cast<size_t>(numDomains) * numRails)
    {
        throw std::invalid_argument("firstOnRail must have domains x rails entries");
    }
    for (const int32_t peer : firstOnRail)
    {
        if (peer < -1 || peer >= static_cast<int32_t>(g))
        {
            throw std::invalid_argument("firstOnRail holds an unknown rank");
        }
    }
    m_gpuNode = std::move(gpuNode);
    m_domain = std::move(domain);
    m_rail = std::move(rail);
    m_firstOnRail = std::move(firstOnRail);
    m_numRails = numRails;
    m_pxn = pxn;
}

bool
RouteEngine::Adjacent(int32_t u, int32_t v) const
{
    const auto first = m_adjNode.begin() + m_adjStart[u];
    const auto last = m_adjNode.begin() + m_adjStart[u + 1];
    return std::binary_search(first, last, v);
}

int32_t
RouteEngine::Relay(int32_t src, int32_t dst) const
{
    if (!m_pxn)
    {
        return -1;
    }
    const int32_t ds = m_domain[src];
    const int32_t dd = m_domain[dst];
    if (ds < 0 || dd < 0 || ds == dd || m_rail[src] == m_rail[dst])
    {
        return -1;
    }
    const int32_t peerRank = m_firstOnRail[static_cast<size_t>(ds) * m_numRails + m_rail[dst]];
    if (peerRank < 0)
    {
        return -1;
    }
    const int32_t peer = m_gpuNode[peerRank];
    const int32_t s = m_gpuNode[src];
    if (peer == s || Adjacent(peer, s))
    {
        return -1;
    }
    for (int64_t i = m_fabricStart[s]; i < m_fabricStart[s + 1]; ++i)
    {
        if (Adjacent(m_adjNode[m_fabricPos[i]], peer))
        {
            return peer; // distance 2 through a non-GPU node (the scale-up switch)
        }
    }
    return -1;
}

RouteEngine::Batch
RouteEngine::Route(const int32_t* srcRank, const int32_t* dstRank, const int64_t* key, int64_t count)
{
    Batch batch;
    batch.offsets.assign(count + 1, 0);
    const auto numGpus = static_cast<int32_t>(m_gpuNode.size());
    std::vector<int32_t> src(count), dst(count), via(count);
    for (int64_t i = 0; i < count; ++i)
    {
        if (srcRank[i] < 0 || srcRank[i] >= numGpus || dstRank[i] < 0 || dstRank[i] >= numGpus)
        {
            throw std::invalid_argument("route " + std::to_string(i) + ": GPU rank out of range");
        }
        src[i] = m_gpuNode[srcRank[i]];
        dst[i] = m_gpuNode[dstRank[i]];
        via[i] = src[i] == dst[i] ? -1 : Relay(srcRank[i], dstRank[i]);
    }
    // Legs: 2i is the direct route or the first leg (to via), 2i+1 the second leg (from via).
    // Group them by target with a counting sort.
    auto target = [&](int64_t leg) -> int32_t {
        const int64_t i = leg >> 1;
        return (leg & 1) ? dst[i] : (via[i] >= 0 ? via[i] : dst[i]);
    };
    auto exists = [&](int64_t leg) -> bool {
        const int64_t i = leg >> 1;
        return src[i] != dst[i] && (!(leg & 1) || via[i] >= 0);
    };
    std::vector<int64_t> perTarget(m_numNodes + 1, 0);
    int64_t numLegs = 0;
    for (int64_t leg = 0; leg < 2 * count; ++leg)
    {
        if (exists(leg))
        {
            ++perTarget[target(leg) + 1];
            ++numLegs;
        }
    }
    for (int32_t v = 0; v < m_numNodes; ++v)
    {
        perTarget[v + 1] += perTarget[v];
    }
    std::vector<int64_t> order(numLegs);
    {
        std::vector<int64_t> fill(perTarget.begin(), perTarget.end() - 1);
        for (int64_t leg = 0; leg < 2 * count; ++leg)
        {
            if (exists(leg))
            {
                order[fill[target(leg)]++] = leg;
            }
        }
    }
    auto legSource = [&](int64_t leg) -> int32_t {
        const int64_t i = leg >> 1;
        return (leg & 1) ? via[i] : src[i];
    };
    // Pass 1: hop counts (the distance of the leg's source to its target).
    std::vector<uint16_t> legLen(2 * count, 0);
    for (int32_t b = 0; b < m_numNodes; ++b)
    {
        if (perTarget[b] == perTarget[b + 1])
        {
            continue;
        }
        const auto& dist = DistancesTo(b);
        for (int64_t k = perTarget[b]; k < perTarget[b + 1]; ++k)
        {
            const int64_t leg = order[k];
            const uint16_t d = dist[legSource(leg)];
            if (d == kUnreachable)
            {
                batch.failedFrom = legSource(leg);
                batch.failedTo = b;
                batch.offsets.clear();
                return batch;
            }
            legLen[leg] = d;
        }
    }
    for (int64_t i = 0; i < count; ++i)
    {
        batch.offsets[i + 1] = batch.offsets[i] + legLen[2 * i] + legLen[2 * i + 1];
    }
    batch.links.resize(batch.offsets[count]);
    // Pass 2: walk every leg and write its links in place.
    std::vector<int32_t> path;
    for (int32_t b = 0; b < m_numNodes; ++b)
    {
        const int64_t legs = perTarget[b + 1] - perTarget[b];
        if (legs == 0)
        {
            continue;
        }
        const auto& dist = DistancesTo(b);
        const bool useCandidates = legs >= kCandidateListLegs;
        if (useCandidates)
        {
            BuildCandidates(b, dist);
        }
        for (int64_t k = perTarget[b]; k < perTarget[b + 1]; ++k)
        {
            const int64_t leg = order[k];
            const int64_t i = leg >> 1;
            path.clear();
            WalkLeg(Leg{legSource(leg), b, key[i]}, dist, useCandidates, path);
            const int64_t at = batch.offsets[i] + ((leg & 1) ? legLen[2 * i] : 0);
            std::copy(path.begin(), path.end(), batch.links.begin() + at);
        }
    }
    return batch;
}

} // namespace cosim
