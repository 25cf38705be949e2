//! What the propagation program set reports: the span ids it assigned to
//! outgoing requests and incoming ones ([`events`]).

pub mod events;
