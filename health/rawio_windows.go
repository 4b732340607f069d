package health

// sharedICMPWorks is false: x/net reads and writes no message on a Windows raw socket
// (recvmsg and sendmsg are not implemented there), so privileged pings use pro-bing's pinger,
// one per probe.
const sharedICMPWorks = false

// recvDontWait is unused on Windows, where RawICMPProber does not run.
const recvDontWait = 0
