/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "port-table.h"

namespace cosim
{

void
PortTable::Add(std::unique_ptr<EgressPort> egress, std::unique_ptr<IngressPort> ingress)
{
    m_egress.push_back(std::move(egress));
    m_ingress.push_back(std::move(ingress));
}

uint32_t
PortTable::GetN() const
{
    return static_cast<uint32_t>(m_egress.size());
}

void
PortTable::ActivateFlow(uint32_t flowId, uint32_t firstLink)
{
    m_egress[firstLink]->ActivateFlow(flowId);
}

} // namespace cosim
