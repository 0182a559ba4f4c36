//! NETCONF client over SSH. Being built (issue 4).
