//! pgsql decoder plugin (in development).
