//! redis decoder plugin (in development).
