"""pi-ansible: deploy and run LLMs on rented GPU pods with Ansible."""

__version__ = "0.1.0"
