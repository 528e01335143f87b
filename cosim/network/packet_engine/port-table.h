/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * cosim packet engine: owner of the egress and ingress ports of all directed links.
 */
#ifndef COSIM_PORT_TABLE_H
#define COSIM_PORT_TABLE_H

#include "egress-port.h"
#include "ingress-port.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace cosim
{

/**
 * \ingroup cosim-packet-engine
 * \brief Owns one EgressPort and one IngressPort per directed link, indexed by link id.
 */
class PortTable
{
  public:
    /**
     * \brief Append the ports of the next directed link (ids are assigned in order).
     * \param egress its egress port
     * \param ingress its ingress port
     */
    void Add(std::unique_ptr<EgressPort> egress, std::unique_ptr<IngressPort> ingress);

    /** \return the number of directed links */
    uint32_t GetN() const;

    /**
     * \param link directed link id
     * \return its egress port
     */
    EgressPort& GetEgress(uint32_t link)
    {
        return *m_egress[link];
    }

    /**
     * \param link directed link id
     * \return its ingress port
     */
    IngressPort& GetIngress(uint32_t link)
    {
        return *m_ingress[link];
    }

    /**
     * \brief FlowScheduler activation callback: hand a started flow to its first port.
     * \param flowId the flow
     * \param firstLink first directed link of its route
     */
    void ActivateFlow(uint32_t flowId, uint32_t firstLink);

  private:
    std::vector<std::unique_ptr<EgressPort>> m_egress;   //!< per directed link
    std::vector<std::unique_ptr<IngressPort>> m_ingress; //!< per directed link
};

} // namespace cosim

#endif /* COSIM_PORT_TABLE_H */
