//! mongodb decoder plugin (in development).
