"""`pi-agent`: the agent for any OpenAI-compatible API, as a command."""

from __future__ import annotations

import click

from pi_ansible.agent.client import OPENAI_BASE_URL, AgentError
from pi_ansible.agent.loop import MAX_STEPS


@click.command(name="pi-agent", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("messages", nargs=-1, metavar="[MESSAGE]...")
@click.option(
    "--base-url", metavar="URL", help=f"OpenAI-compatible API base URL  [default: {OPENAI_BASE_URL}]"
)
@click.option(
    "--api-key",
    metavar="KEY",
    envvar=["OPENAI_API_KEY", "PI_API_KEY"],
    show_envvar=True,
    help="API key (not needed for a local server started without one).",
)
@click.option("--model", metavar="ID", help="Model id  [default: the server's model; gpt-5-mini on OpenAI]")
@click.option(
    "--api",
    type=click.Choice(["completions", "responses"]),
    default=None,
    help="Chat Completions or Responses API  [default: completions]",
)
@click.option("--system-prompt", metavar="TEXT", help="System prompt (instructions for the model).")
@click.option("--json", "json_output", is_flag=True, help="Print events as JSON lines.")
@click.option(
    "-i", "--interactive", is_flag=True, help="Chat in the terminal (also when no MESSAGE is given)."
)
@click.option(
    "-c", "--continue", "continue_", is_flag=True, help="Continue this directory's most recent session."
)
@click.option(
    "--max-steps",
    type=click.IntRange(1, 200),
    default=MAX_STEPS,
    show_default=True,
    help="Model calls allowed per message before the agent stops.",
)
def agent_command(
    messages, base_url, api_key, model, api, system_prompt, json_output, interactive, continue_, max_steps
):
    """Ask a model, letting it read and search files here (read, list, bash, glob, rg).

    Several MESSAGEs are sent in order; with none, a MESSAGE is read from stdin, or a chat starts on a
    terminal. Sessions are kept per directory under $PI_CONFIG_DIR/sessions (default ~/.pi).

    \b
    Examples:
      pi-agent "What does this project do?"
      pi-agent --base-url http://localhost:8000/v1 -i
      pi-agent -c "And where is it tested?"
    """
    from pi_ansible.agent.run import run_agent

    try:
        code = run_agent(
            base_url=base_url,
            api_key=api_key,
            model=model,
            api=api,
            messages=list(messages),
            json_output=json_output,
            interactive=interactive,
            continue_=continue_,
            system_prompt=system_prompt,
            max_steps=max_steps,
        )
    except AgentError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    if code:
        raise click.exceptions.Exit(code)


def main() -> None:
    agent_command(prog_name="pi-agent")


if __name__ == "__main__":  # pragma: no cover
    main()
