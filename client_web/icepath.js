// Which way the audio goes between this browser and the server, and why it may go nowhere.
//
// - describePath(report): from getStats(), the selected candidate pair's two ends: "direct"
//   (host candidates on both sides), "through NAT" (a server- or peer-reflexive address on
//   either side: a NAT translated it), or "relayed by TURN" (a relay candidate); with the
//   transport: UDP, TCP, or for a relay the way to the TURN server (UDP, TCP or TLS).
// - explainIceFailure(...): a failed ICE connection, in words a musician can act on or pass
//   to the host.

/** What the latency panel shows for the path, from an RTCStatsReport; null before a pair is
 * selected. `kind` is "direct", "nat" or "relay". */
export function describePath(report) {
  let pairId = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  let pair = null;
  report.forEach((s) => {
    if (s.type !== "candidate-pair") return;
    if (pairId ? s.id === pairId : s.nominated && s.state === "succeeded") pair = s;
  });
  if (!pair) return null;
  const local = report.get(pair.localCandidateId);
  const remote = report.get(pair.remoteCandidateId);
  if (!local || !remote) return null;
  const types = [local.candidateType, remote.candidateType];
  const transport = (local.protocol ?? "udp").toUpperCase();
  if (types.includes("relay")) {
    // relayProtocol: how this browser reaches its TURN server (udp, tcp or tls).
    const toRelay = local.candidateType === "relay" && local.relayProtocol
      ? { udp: "UDP", tcp: "TCP", tls: "TCP/TLS" }[local.relayProtocol] ?? local.relayProtocol
      : transport;
    return { kind: "relay", transport: toRelay, label: `relayed by TURN (${toRelay})` };
  }
  if (types.includes("srflx") || types.includes("prflx")) {
    return { kind: "nat", transport, label: `through NAT (${transport})` };
  }
  return { kind: "direct", transport, label: `direct (${transport})` };
}

/** Whether any of the ICE servers `joined` gave is a TURN server. */
export function offersTurn(iceServers) {
  return (iceServers ?? []).some((server) => [server.urls].flat()
    .some((url) => url.startsWith("turn:") || url.startsWith("turns:")));
}

/** Why a media connection failed, in words; `gatheredRelay`: whether this browser got a
 * relay candidate from the TURN server. */
export function explainIceFailure(iceServers, gatheredRelay) {
  if (!offersTurn(iceServers)) {
    return "no route to the server's media port: check that your firewall or network lets " +
      "UDP through to the server, or ask the host to set up TURN (serve --ice-server turn:… " +
      "--turn-secret-file) for networks that block it";
  }
  if (!gatheredRelay) {
    return "no route to the server's media port, and its TURN relay could not be reached " +
      "either: your network may block it too (TURN listens on UDP/TCP 3478 and TLS 5349 or " +
      "443); tell the host";
  }
  return "no route to the server's media port, not even through its TURN relay: the host " +
    "should check the server's firewall (its UDP port range) and the TURN server";
}
