//go:build !unix

package main

// keepEarlyReloads does nothing where there is no SIGUSR1: on Windows a reload is the reload
// plugin's, which rereads the Corefile when it changes.
func keepEarlyReloads() {}
