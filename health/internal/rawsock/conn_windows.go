package rawsock

// BatchedICMP is false: x/net reads and writes no message on a Windows raw socket
// (recvmsg and sendmsg are not implemented there), so privileged pings use pro-bing's pinger,
// one per probe.
const BatchedICMP = false

// recvDontWait is unused on Windows, where the echo wire does not run.
const recvDontWait = 0
