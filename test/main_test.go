// Package test runs the real coredns binary built from ../build against real TCP backends on
// 127.0.0.0/8 and ::1, and queries it over UDP and TCP with miekg/dns (test/harness). Nothing
// here talks to any address outside the loopback range.
//
// Address plan: every test owns its own backend addresses, so that no two parallel tests ever
// share a (backend, port) pair, and ports come from one allocator that never hands out a port
// twice in a run (harness.FreePort). Sorted by address:
//
//	127.0.0.11-.13, .21-.60      TestDNS (with ::1)
//	127.0.0.101, .102            TestFailover
//	127.0.0.103 (live), .104 (closed) TestFirstAnswer
//	127.0.0.105, .106            TestAllDown (with ::1)
//	127.0.0.107-.109             TestPolicies
//	127.0.0.110                  TestReady
//	127.0.0.111-.113             TestReload
//	127.0.0.114                  TestReloadBad
//	127.0.0.115-.117             TestMetrics (with ::1, closed)
//	127.0.0.118                  TestNoNextPlugin
//	127.0.0.119, .121 (live), .120 (closed) TestGoodCorefileDefaults
//	127.0.0.122, .123            TestReloadFailsAfterStartup
//	127.0.0.124-.126             TestCacheInFront
//	127.0.0.140, .141            TestBesideZoneFile
//	127.0.0.142                  TestSerialIsTheConfiguration
//	127.0.0.143                  TestAllDownDualStack (with ::1, closed)
//	127.0.0.160-.162             TestReloadFailedLeavesNothing
//	127.0.0.170-.177 (silent)    TestStartupProbesTogether
//	127.0.0.180, .181            TestMetricsPerServer
//	127.0.0.200, .201            deploy.TestMetricsExported (another package, same run)
//	127.0.0.210-.213            TestHTTPChecks
//	127.0.0.215-.217            TestExecChecks
//	127.0.0.241, .242            TestPriorityGroups
//	127.0.0.244-.247            TestConsistentHashECS
//	127.0.0.248, .249            TestNopreemptAcrossReload
//	127.0.0.230-.232            TestStatusJSON
//	127.0.0.233, .234           TestStatusPageInBrowser
//	127.0.0.251, .252           TestLANResolvers (with unbound, dnsmasq and a forwarding coredns on 127.0.0.1)
//	127.0.13.1-.4                deploy.TestImage (127.0.13.0/24 reserved for issue 27's container image)
//	127.0.1.100-.103             TestBackendsFile
//	127.0.1.104, .105            TestBackendsFileBadAtStartup (never probed)
//	127.0.1.110-.113             TestBackendsEtcd
//	127.0.1.114                  TestBackendsEtcdAwaited
//	127.0.1.115                  TestBackendsEtcdReloadWhileDown
//	127.0.1.120-.129             the fleet agreement tests
//	127.0.1.130, .131            TestBackendsEtcdTLS (127.0.1.130-.139 reserved for etcd TLS and credentials)
//	127.0.1.132, .133            TestBackendsEtcdCredentials
//	127.0.1.200, .201            TestDrain (127.0.1.200-.209 reserved for it)
//	127.0.1.210-.213            TestStatusAPI (127.0.1.210-.219 reserved for it)
//	127.0.15.1-.3               TestBackendsAPI (127.0.15.0/24 reserved for the backends API and healthdnsctl)
//	127.0.15.10-.12             TestHealthdnsctl
//	127.0.2.11, .12              TestDrainedLastResort
//	127.0.2.21, .22              TestBackendsEtcdFirstAnswer
//	127.0.3.1, .2                TestFleetReconcilesAfterOutage (127.0.3.0/24: issue 21's fleet items)
//	127.0.3.11-.13               TestEtcdBadKeySkipped
//	127.0.3.21, .22              TestFleetDrain
//	127.0.4.1, .2, .11-.14       TestStatusPageGroupsInBrowser (.14 never listens)
//	127.0.5.1                    TestHTTPBodyExact (127.0.5.0/24 reserved for the health checks' tests)
//	127.5.0.2-127.5.2.1          TestExecChecksQueue (500 backends; 127.5.0.0/16 reserved for large counts)
//	127.0.6.1-.3                 TestBackendsFileRewrittenInPlace
//	127.0.6.10                   TestStatusTokenFromSystemdCredentials
//	127.0.7.1, .2                TestBackendsFileReplacedByAFIFO (127.0.7.1-.19 reserved for backends file hardening)
//	127.0.8.1-.6                 TestReloadStorm (127.0.8.0/24 reserved for issue 23's load tests)
//	127.0.9.1, .2                TestStatusTLS (127.0.9.1-.60: issue 23's status tls and etcd caps)
//	127.0.9.11-.13               TestEtcdValueCap
//	127.0.9.21, .22              TestEtcdKeyCap
//	127.0.11.1, .2               TestEtcdRestartsKeepGoroutines (127.0.11.0/24 reserved for etcd restarts)
//	127.0.10.30-.35              TestProbePathologies (127.0.10.0/24 reserved for issue 23's probe pathologies:
//	                             the wire package's tests use .11-.13 on loopback, and .1-.3, .20 in namespaces of
//	                             their own, as the health package's 1,000 black-holed backends use 127.6.0.0/16)
//	127.0.8.64-.127              TestChaos (.64-.66 steady, then one flapping backend each)
//	127.0.17.1, .2               TestFleetQuorum (127.0.17.0/24 reserved for issue 26's quorum)
//	127.0.17.11, .12             TestFleetQuorumReturn
//	127.0.17.21, .22             TestFleetQuorumRandomCuts
//	127.0.19.1, .2               TestFleetQuorumChaos (127.0.19.0/24 reserved for issue 26's schedules)
//	127.0.12.1, .2               TestEventStream (127.0.12.0/24 reserved for issue 24's events)
//	127.0.16.1-.4, .9 (unlisted) TestPushCheck (127.0.16.0/24 reserved for issue 25's push checks)
//	127.0.18.1, .2, .11, .12     TestStateAcrossRestart (127.0.18.0/24 reserved for issue 26's state file)
//	127.0.14.1-.4, .10           TestNotifyEveryKind (127.0.14.0/24 reserved for issue 24's notify: backends, receivers)
//	127.0.14.21, .22, .30, .31   TestNotifyStuckTargets
//	127.0.14.41, .42, .50        TestMeasureNotify (-args -notify.measure)
//	127.0.14.61-.63              TestNotifyEtcd
package test

import (
	"os"
	"testing"

	"github.com/healthdns/healthdns/test/harness"
)

// TestMain builds coredns once for all the tests of the package.
func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
