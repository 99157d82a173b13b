//! The services that share the totem stream. Every payload a service multicasts starts with its
//! service byte, so that the node hands each delivery to the service that sent it; payloads of
//! no service (the test workload's) start with other bytes.

/// A service's byte, the first byte of each of its totem payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ServiceId {
    /// Closed process groups ([`super::cpg`]).
    Cpg = 1,
    /// Extended virtual synchrony ([`super::evs`]).
    Evs = 2,
}

impl ServiceId {
    /// The service byte.
    #[must_use]
    pub const fn byte(self) -> u8 {
        self as u8
    }

    /// The service a totem payload belongs to, by its first byte (`None`: no service's).
    #[must_use]
    pub fn of(payload: &[u8]) -> Option<ServiceId> {
        match payload.first()? {
            1 => Some(ServiceId::Cpg),
            2 => Some(ServiceId::Evs),
            _ => None,
        }
    }

    /// The service a client names in its IPC handshake (`"cpg"`, `"evs"`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<ServiceId> {
        match name {
            "cpg" => Some(ServiceId::Cpg),
            "evs" => Some(ServiceId::Evs),
            _ => None,
        }
    }

    /// The name a client uses in its IPC handshake.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            ServiceId::Cpg => "cpg",
            ServiceId::Evs => "evs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_names_round_trip() {
        for service in [ServiceId::Cpg, ServiceId::Evs] {
            assert_eq!(ServiceId::of(&[service.byte(), 9]), Some(service));
            assert_eq!(ServiceId::from_name(service.name()), Some(service));
        }
        assert_eq!(ServiceId::of(&[]), None);
        assert_eq!(ServiceId::of(&[0xED]), None, "the workload's magic");
        assert_eq!(ServiceId::from_name("CPG"), None);
        assert_eq!(super::super::cpg::wire::SERVICE, ServiceId::Cpg.byte());
        assert_eq!(super::super::evs::wire::SERVICE, ServiceId::Evs.byte());
    }
}
