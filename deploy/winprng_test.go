package deploy

import (
	"bytes"
	"encoding/binary"
)

// processPrngForwarder is a DLL named bcryptprimitives.dll whose only export, ProcessPrng,
// forwards to advapi32's SystemFunction036 (RtlGenRandom): the same job, a buffer filled with
// random bytes and a true result. Go's Windows runtime loads ProcessPrng from System32 at
// start, since Go 1.22, and Wine before 9.0 has no such DLL, so TestWindowsWine puts this one in
// its prefix. It holds no code: the loader resolves a forwarded export itself.
func processPrngForwarder() []byte {
	const (
		fileAlign  = 0x200
		sectionRVA = 0x1000
		exportSize = 40
	)
	// The .edata section: the export directory, its three one-entry tables, then the strings.
	strs := []string{"bcryptprimitives.dll", "ProcessPrng", "advapi32.SystemFunction036"}
	at := map[string]uint32{}
	strOff := uint32(exportSize + 4 + 4 + 2)
	var strBuf bytes.Buffer
	for _, s := range strs {
		at[s] = sectionRVA + strOff + uint32(strBuf.Len())
		strBuf.WriteString(s)
		strBuf.WriteByte(0)
	}
	var sec bytes.Buffer
	le := binary.LittleEndian
	put := func(v any) { binary.Write(&sec, le, v) }
	put([4]uint32{0, 0, 0, at["bcryptprimitives.dll"]}) // characteristics, time, version, name
	put([6]uint32{1, 1, 1, sectionRVA + exportSize, sectionRVA + exportSize + 4, sectionRVA + exportSize + 8})
	put(at["advapi32.SystemFunction036"]) // the function's address: a forwarder, being inside the directory
	put(at["ProcessPrng"])
	put(uint16(0))
	sec.Write(strBuf.Bytes())
	dirSize := uint32(sec.Len())
	raw := make([]byte, (sec.Len()+fileAlign-1)/fileAlign*fileAlign)
	copy(raw, sec.Bytes())

	var img bytes.Buffer
	w := func(v any) { binary.Write(&img, le, v) }
	dos := make([]byte, 0x40)
	copy(dos, "MZ")
	le.PutUint32(dos[0x3c:], 0x40)
	img.Write(dos)
	img.WriteString("PE\x00\x00")
	w(struct {
		Machine, Sections             uint16
		Time, Symbols, NSymbols       uint32
		OptionalSize, Characteristics uint16
	}{0x8664, 1, 0, 0, 0, 240, 0x2022}) // amd64; executable, large-address-aware DLL
	w(struct {
		Magic                                        uint16
		LinkerMajor, LinkerMinor                     uint8
		Code, Data, BSS, Entry, CodeBase             uint32
		ImageBase                                    uint64
		SectionAlign, FileAlign                      uint32
		OSMajor, OSMinor, ImgMajor, ImgMinor         uint16
		SubMajor, SubMinor                           uint16
		Win32, ImageSize, HeadersSize, Sum           uint32
		Subsystem, DLLFlags                          uint16
		StackReserve, StackCommit, HeapRes, HeapComm uint64
		LoaderFlags, Dirs                            uint32
	}{0x20b, 1, 0, 0, uint32(len(raw)), 0, 0, sectionRVA, 0x180000000, 0x1000, fileAlign,
		6, 0, 0, 0, 6, 0, 0, sectionRVA + 0x1000, fileAlign, 0, 3, 0x140,
		0x100000, 0x1000, 0x100000, 0x1000, 0, 16})
	dirs := make([]uint32, 32)
	dirs[0], dirs[1] = sectionRVA, dirSize // the export directory
	w(dirs)
	w(struct {
		Name                                  [8]byte
		VirtualSize, RVA, RawSize, RawPointer uint32
		Relocs, Lines                         uint32
		NRelocs, NLines                       uint16
		Characteristics                       uint32
	}{[8]byte{'.', 'e', 'd', 'a', 't', 'a'}, dirSize, sectionRVA, uint32(len(raw)), fileAlign, 0, 0, 0, 0, 0x40000040})
	img.Write(make([]byte, fileAlign-img.Len()))
	img.Write(raw)
	return img.Bytes()
}
