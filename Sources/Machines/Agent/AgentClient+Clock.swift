import Foundation
import Guest
import StasisCore

/// One reading of the guest's wall clock, bracketed by the host's (nanoseconds since the epoch).
struct ClockReading: Sendable, Equatable {
    /// Host clock when the request left.
    var sent: Int64
    /// Guest clock when the agent read the request.
    var guest: Int64
    /// Host clock when the reply came back.
    var received: Int64

    var roundTrip: Duration { .nanoseconds(received - sent) }
    /// How far the guest's clock is ahead of the host's. The guest read its clock somewhere
    /// between `sent` and `received`, so this is off by at most half the round trip.
    var guestAhead: Int64 { guest - (sent + (received - sent) / 2) }
}

extension AgentClient {
    /// Sets the guest's wall clock.
    public func setClock(to date: Date = Date()) async throws {
        try await expectOK(.setClock(unixNanoseconds: Int64(date.timeIntervalSince1970 * 1e9)), "setClock")
    }

    /// The guest's wall clock, in nanoseconds since the epoch. Needs agent protocol 3.
    public func readClock() async throws -> Int64 {
        try requireProtocol(3, for: "reading the clock")
        switch try await request(.readClock) {
        case .clock(let ns): return ns
        case .failure(let code, let text): throw StasisError(.guestFailure, text, cause: Errno(code))
        default: throw StasisError(.protocolError, "unexpected reply to readClock")
        }
    }

    /// Moves the guest's wall clock by `nanoseconds` from wherever it is when the request
    /// arrives. Needs agent protocol 3.
    public func shiftClock(by nanoseconds: Int64) async throws {
        try requireProtocol(3, for: "shifting the clock")
        try await expectOK(.shiftClock(nanoseconds: nanoseconds), "shiftClock")
    }

    /// Sets the guest's wall clock to the host's; returns the round trip of the reading it
    /// relied on, twice the most the clock can be off.
    ///
    /// The guest clock is read up to `attempts` times, stopping at the first round trip within
    /// `tolerance`, and then shifted by the offset the quickest reading showed. A shift is
    /// relative, so a request that waits (a guest still faulting its memory back in after a
    /// restore, a host loaded for seconds) cannot leave the guest behind. Agents older than
    /// protocol 3 have their clock set outright instead (`syncClock(tolerance:attempts:trip:)`).
    @discardableResult
    public func syncClock(tolerance: Duration = .milliseconds(250), attempts: Int = 8) async throws -> Duration {
        guard let version = guestInfo?.agentVersion, version >= 3 else {
            let clock = ContinuousClock()
            return try await Self.syncClock(tolerance: tolerance, attempts: attempts) { lead in
                let start = clock.now
                try await setClock(to: Date().addingTimeInterval(lead.milliseconds / 1000))
                return clock.now - start
            }
        }
        let reading = try await Self.quickestReading(tolerance: tolerance, attempts: attempts) {
            let sent = WallClock.nanoseconds()
            let guest = try await readClock()
            return ClockReading(sent: sent, guest: guest, received: WallClock.nanoseconds())
        }
        if reading.guestAhead != 0 { try await shiftClock(by: -reading.guestAhead) }
        return reading.roundTrip
    }

    /// Takes readings until one's round trip is within `tolerance`, at most `attempts`;
    /// returns the quickest.
    static func quickestReading(tolerance: Duration, attempts: Int, isolation: isolated (any Actor)? = #isolation,
                                read: () async throws -> ClockReading) async throws -> ClockReading {
        var best = try await read()
        for _ in 1 ..< max(1, attempts) where best.roundTrip > tolerance {
            let next = try await read()
            if next.roundTrip < best.roundTrip { best = next }
        }
        return best
    }

    /// `syncClock`'s rule for agents before protocol 3, around `trip`, which sets the guest
    /// clock `lead` ahead of the host's and returns how long that took. The guest sets the time
    /// it is sent when it reads the request, so a request that waits leaves it that far behind:
    /// a slow round trip is repeated, aimed half a round trip ahead, until one is quick. A quick
    /// trip aimed far ahead set the guest that far ahead, so it counts only when its aim was
    /// within the tolerance too. Every trip slow leaves the guest off by up to the last one.
    static func syncClock(tolerance: Duration, attempts: Int, isolation: isolated (any Actor)? = #isolation,
                          trip: (_ lead: Duration) async throws -> Duration) async throws -> Duration {
        var lead = Duration.zero
        var roundTrip = Duration.zero
        for _ in 0 ..< max(1, attempts) {
            roundTrip = try await trip(lead)
            if roundTrip <= tolerance && lead <= tolerance / 2 { break }
            lead = roundTrip / 2
        }
        return roundTrip
    }

    /// Throws `unsupported` unless the agent speaks protocol `version` or later.
    func requireProtocol(_ version: UInt16, for what: String) throws {
        guard let info = guestInfo, info.agentVersion >= version else {
            throw StasisError(.unsupported, "the guest agent speaks protocol \(guestInfo?.agentVersion ?? 0); \(what) needs \(version)")
        }
    }
}
