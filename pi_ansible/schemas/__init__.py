"""JSON Schemas shipped with pi-ansible (a package so the files travel in the wheel)."""
