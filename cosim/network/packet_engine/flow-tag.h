/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: packet tag identifying the flow a frame belongs to.
 */
#ifndef COSIM_FLOW_TAG_H
#define COSIM_FLOW_TAG_H

#include "ns3/tag.h"

#include <cstdint>

namespace cosim
{

/**
 * \ingroup cosim-packet-engine
 * \brief Packet tag carrying the id of the flow a frame belongs to.
 *
 * Attached as a packet tag when the source creates the frame; every node reads it to
 * find the next hop of the flow's source route.
 */
class FlowTag : public ns3::Tag
{
  public:
    /**
     * \brief Get the type ID.
     * \return the object TypeId
     */
    static ns3::TypeId GetTypeId();

    FlowTag();

    /**
     * \brief Construct a tag for a flow.
     * \param flowId the flow id
     */
    explicit FlowTag(uint32_t flowId);

    ns3::TypeId GetInstanceTypeId() const override;
    uint32_t GetSerializedSize() const override;
    void Serialize(ns3::TagBuffer buffer) const override;
    void Deserialize(ns3::TagBuffer buffer) override;
    void Print(std::ostream& os) const override;

    /**
     * \brief Set the flow id.
     * \param flowId the flow id
     */
    void SetFlowId(uint32_t flowId);

    /** \return the flow id */
    uint32_t GetFlowId() const;

  private:
    uint32_t m_flowId; //!< flow id
};

} // namespace cosim

#endif /* COSIM_FLOW_TAG_H */
