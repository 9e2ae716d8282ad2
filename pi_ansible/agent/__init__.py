"""The agent: a model that reads, lists, searches and runs commands here, over an OpenAI-compatible API.

`run_agent` is what `pi-agent` and `pi agent NAME` call; it is imported lazily so that importing this
package (for its events or tools) stays cheap.
"""

from __future__ import annotations

__all__ = ["AgentError", "run_agent"]


def __getattr__(name: str):
    if name == "run_agent":
        from pi_ansible.agent.run import run_agent

        return run_agent
    if name == "AgentError":
        from pi_ansible.agent.client import AgentError

        return AgentError
    raise AttributeError(name)
