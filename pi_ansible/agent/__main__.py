from pi_ansible.agent.cli import main

main()
