import GuestAgent

// stasis-init: PID 1 of every Stasis guest. See docs/guest-agent.md.
GuestAgentMain.run()
