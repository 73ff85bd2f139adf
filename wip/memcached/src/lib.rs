//! memcached decoder plugin (in development).
