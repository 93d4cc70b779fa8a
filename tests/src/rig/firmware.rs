//! A 64 KiB firmware image (`-bios`) that counts timer interrupts in guest RAM, so that a
//! VM with no guest OS has memory state worth snapshotting.
//!
//! Why not a boot sector under SeaBIOS: on this machine SeaBIOS takes 2–4 s to reach the
//! boot sector (measured), most of it waiting after its option ROMs; this image runs its
//! first instruction at once. Hand-assembled 16-bit real-mode code, every instruction with
//! its bytes:
//!
//! - at the reset vector `F000:FFF0`: a far jump to `F000:0000`;
//! - at `F000:0000`: zero the 64-bit counter at [`COUNTER_ADDR`], write the marker
//!   [`MARKER`] after it, point interrupt vector 8 (IRQ0 as the PIC is set up below) at the
//!   handler, disable the local APIC (so the 8259 PIC's interrupt reaches the CPU without
//!   the LINT0 setup a BIOS would do), initialise the PIC with only IRQ0 unmasked, program
//!   PIT channel 0 at 100 Hz, then `sti; hlt` forever;
//! - at `F000:0100`: the IRQ0 handler: a 64-bit increment of the counter, end of interrupt.
//!
//! The vCPU idles in `hlt` between ticks, so a rig costs almost no host CPU. The counter
//! runs on QEMU's virtual clock: it stops while the VM is paused and goes back with a
//! `snapshot-load`.

/// Guest-physical address of the 64-bit little-endian tick counter.
pub const COUNTER_ADDR: u64 = 0x7e00;

/// Bytes written right after the counter once the firmware ran (`COUNTER_ADDR + 8`).
pub const MARKER: [u8; 4] = *b"SNAP";

/// Timer interrupts per second (PIT divisor 11932 of 1.193182 MHz).
pub const TICKS_PER_SECOND: u64 = 100;

/// Size of the image: QEMU wants a multiple of 64 KiB for `-bios`.
const SIZE: usize = 64 * 1024;

/// `F000:0000`.
const INIT: &[u8] = &[
    0xFA, // cli
    0x31, 0xC0, // xor ax, ax
    0x8E, 0xD8, // mov ds, ax
    0x8E, 0xD0, // mov ss, ax
    0xBC, 0x00, 0x70, // mov sp, 0x7000
    // Disable the local APIC: IA32_APIC_BASE (MSR 0x1b) bit 11 cleared.
    0x66, 0xB9, 0x1B, 0x00, 0x00, 0x00, // mov ecx, 0x1b
    0x0F, 0x32, // rdmsr
    0x66, 0x25, 0xFF, 0xF7, 0xFF, 0xFF, // and eax, 0xfffff7ff
    0x0F, 0x30, // wrmsr
    0x66, 0xC7, 0x06, 0x00, 0x7E, 0x00, 0x00, 0x00, 0x00, // mov dword [0x7e00], 0
    0x66, 0xC7, 0x06, 0x04, 0x7E, 0x00, 0x00, 0x00, 0x00, // mov dword [0x7e04], 0
    0x66, 0xC7, 0x06, 0x08, 0x7E, b'S', b'N', b'A', b'P', // mov dword [0x7e08], "SNAP"
    0xC7, 0x06, 0x20, 0x00, 0x00, 0x01, // mov word [0x20], 0x0100 (vector 8 offset)
    0xC7, 0x06, 0x22, 0x00, 0x00, 0xF0, // mov word [0x22], 0xf000 (vector 8 segment)
    0xB0, 0x11, 0xE6, 0x20, // PIC ICW1: edge, cascade, ICW4 follows
    0xB0, 0x08, 0xE6, 0x21, // ICW2: IRQ0-7 → vectors 8-15
    0xB0, 0x04, 0xE6, 0x21, // ICW3: slave on IRQ2
    0xB0, 0x01, 0xE6, 0x21, // ICW4: 8086 mode
    0xB0, 0xFE, 0xE6, 0x21, // OCW1: mask all but IRQ0
    0xB0, 0x34, 0xE6, 0x43, // PIT: channel 0, lobyte/hibyte, mode 2
    0xB0, 0x9C, 0xE6, 0x40, // divisor 11932 = 0x2e9c, low byte
    0xB0, 0x2E, 0xE6, 0x40, // high byte
    0xFB, // sti
    0xF4, // hlt
    0xEB, 0xFD, // jmp back to hlt
];

/// `F000:0100`, the IRQ0 handler.
const HANDLER_OFFSET: usize = 0x100;
const HANDLER: &[u8] = &[
    0x66, 0xFF, 0x06, 0x00, 0x7E, // inc dword [0x7e00]
    0x75, 0x05, // jnz +5 (skip the carry)
    0x66, 0xFF, 0x06, 0x04, 0x7E, // inc dword [0x7e04]
    0x50, // push ax
    0xB0, 0x20, 0xE6, 0x20, // PIC end of interrupt
    0x58, // pop ax
    0xCF, // iret
];

/// The reset vector, `F000:FFF0`.
const RESET_OFFSET: usize = 0xFFF0;
const RESET: &[u8] = &[0xEA, 0x00, 0x00, 0x00, 0xF0]; // jmp far F000:0000

/// The firmware image, to write to a file passed as `-bios`.
pub fn image() -> Vec<u8> {
    let mut rom = vec![0u8; SIZE];
    rom[..INIT.len()].copy_from_slice(INIT);
    rom[HANDLER_OFFSET..HANDLER_OFFSET + HANDLER.len()].copy_from_slice(HANDLER);
    rom[RESET_OFFSET..RESET_OFFSET + RESET.len()].copy_from_slice(RESET);
    rom
}

/// Decodes the counter from 12 bytes read at [`COUNTER_ADDR`]; `None` until the firmware
/// wrote its marker.
pub fn decode_counter(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 12 || bytes[8..12] != MARKER {
        return None;
    }
    Some(u64::from_le_bytes(bytes[..8].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_layout() {
        let rom = image();
        assert_eq!(rom.len(), SIZE);
        assert!(
            INIT.len() < HANDLER_OFFSET,
            "init code overlaps the handler"
        );
        assert_eq!(&rom[RESET_OFFSET..RESET_OFFSET + 5], RESET);
        assert_eq!(rom[HANDLER_OFFSET + HANDLER.len() - 1], 0xCF);
    }

    #[test]
    fn counter_needs_marker() {
        let mut bytes = [0u8; 12];
        bytes[0] = 7;
        assert_eq!(decode_counter(&bytes), None);
        bytes[8..].copy_from_slice(&MARKER);
        bytes[4] = 1;
        assert_eq!(decode_counter(&bytes), Some((1 << 32) + 7));
    }
}
