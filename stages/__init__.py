"""Thin DVC stage scripts: read a params group, call `pipeline`, write the declared outputs."""
