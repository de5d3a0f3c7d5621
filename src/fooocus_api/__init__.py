"""fooocus_api: the FooocusAPI-compatible HTTP service over fooocus_core."""
