"""The fleet registry: jurisdictions, parties, sites, gateways, devices and contracts."""
