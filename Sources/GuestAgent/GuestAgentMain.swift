/// Entry point of the guest agent: boot to the image's root, then serve the host forever.
public enum GuestAgentMain {
    public static func run() -> Never {
        let options = Boot.run()
        log("up as \(options.hostname)")
        Agent().run()
    }
}
