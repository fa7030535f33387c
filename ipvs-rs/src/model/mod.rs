//! The typed model of the IPVS table: services, destinations, schedulers, statistics.
