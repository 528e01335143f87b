/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "flow-tag.h"

namespace cosim
{

ns3::TypeId
FlowTag::GetTypeId()
{
    static ns3::TypeId tid = ns3::TypeId("cosim::FlowTag")
                                 .SetParent<ns3::Tag>()
                                 .SetGroupName("Cosim")
                                 .AddConstructor<FlowTag>();
    return tid;
}

FlowTag::FlowTag()
    : m_flowId(0)
{
}

FlowTag::FlowTag(uint32_t flowId)
    : m_flowId(flowId)
{
}

ns3::TypeId
FlowTag::GetInstanceTypeId() const
{
    return GetTypeId();
}

uint32_t
FlowTag::GetSerializedSize() const
{
    return sizeof(uint32_t);
}

void
FlowTag::Serialize(ns3::TagBuffer buffer) const
{
    buffer.WriteU32(m_flowId);
}

void
FlowTag::Deserialize(ns3::TagBuffer buffer)
{
    m_flowId = buffer.ReadU32();
}

void
FlowTag::Print(std::ostream& os) const
{
    os << "flow=" << m_flowId;
}

void
FlowTag::SetFlowId(uint32_t flowId)
{
    m_flowId = flowId;
}

uint32_t
FlowTag::GetFlowId() const
{
    return m_flowId;
}

} // namespace cosim
