"""Every size and rounding rule of a VHD image in blktap's layout, in one place.

The library, the tree (space checks) and the stores (container sizes) all
compute sizes here and nowhere else. Pure arithmetic: no I/O, no imports.

An image this library writes: footer copy (512) and header (1024) at 0, the
BAT from ``TABLE_OFFSET`` (4 bytes per block, padded to a sector), blktap's
batmap header (one sector) and batmap (1 bit per block, padded to a
sector), a differencing image's three parent locators (a sector each), then
blocks of ``BLOCK_SIZE`` data after a one-sector bitmap, their data
4 KiB-aligned, and the trailing footer.
"""

SECTOR = 512
BLOCK_SIZE = 2 * 1024 * 1024          # blktap always writes 2 MiB blocks
SECTORS_PER_BLOCK = BLOCK_SIZE // SECTOR
DATA_ALIGN = 4096                     # block data starts 4 KiB-aligned
FOOTER_SIZE = 512
HEADER_OFFSET = 512
HEADER_SIZE = 1024
TABLE_OFFSET = HEADER_OFFSET + HEADER_SIZE
LOCATOR_SPACE = SECTOR                # blktap: one sector per parent locator
SNAPSHOT_LOCATOR_COUNT = 3            # MacX, W2ku, W2ru
MAX_VIRTUAL_SIZE = 2 * 1024 ** 4      # 2 TiB: blktap's practical limit


def round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def round_size(virtual_size: int) -> int:
    """Virtual size rounded up to whole 2 MiB blocks, as vhd-util create does."""
    return round_up(virtual_size, BLOCK_SIZE)


def blocks(virtual_size: int) -> int:
    """Blocks (BAT entries) a disk of ``virtual_size`` needs."""
    return -(-virtual_size // BLOCK_SIZE)


def bat_bytes(max_bat: int) -> int:
    """Bytes the BAT occupies on disk (padded to a sector)."""
    return round_up(max_bat * 4, SECTOR)


def batmap_bytes(max_bat: int) -> int:
    """Bytes the batmap payload occupies on disk (padded to a sector)."""
    return round_up(-(-max_bat // 8), SECTOR)


def bitmap_bytes(sectors_per_block: int) -> int:
    """Bytes of a block's sector bitmap (padded to a sector)."""
    return round_up(-(-sectors_per_block // 8), SECTOR)


def metadata_end(max_bat: int, with_locators: bool) -> int:
    """Where the metadata of a new image ends: header, BAT, batmap, locators."""
    end = TABLE_OFFSET + bat_bytes(max_bat) + SECTOR + batmap_bytes(max_bat)
    if with_locators:
        end += SNAPSHOT_LOCATOR_COUNT * LOCATOR_SPACE
    return end


def empty_size(virtual_size: int) -> int:
    """Bytes an empty dynamic or differencing image of ``virtual_size`` needs
    at most: its metadata (with locators), the data alignment slack and the
    trailing footer. The size of a new LV, and what a new volume costs."""
    return metadata_end(blocks(virtual_size), True) + DATA_ALIGN + FOOTER_SIZE


def required_size(virtual_size: int) -> int:
    """Container bytes for a fully allocated image of that size (with locators)."""
    count = blocks(virtual_size)
    meta = round_up(metadata_end(count, True) + SECTOR, DATA_ALIGN)
    # Twice the metadata: resize() writes a grown BAT after the data and
    # leaves the old one (never larger than the new) unused.
    return 2 * meta + count * (BLOCK_SIZE + DATA_ALIGN) + FOOTER_SIZE


def resize_cost(old_size: int, new_size: int) -> int:
    """Bytes growing an image's virtual size may take: the BAT's new entries
    and a sector of slack."""
    return 4 * (new_size // BLOCK_SIZE - old_size // BLOCK_SIZE) + 4096


def may_hold_data(virtual_size: int, physical_size: int) -> bool:
    """False when an image of that size is too small to hold any block (so it
    is empty without reading its BAT): footer copy and header, the BAT, one
    block with its bitmap, the trailing footer."""
    return physical_size >= 1536 + 4 * blocks(virtual_size) + BLOCK_SIZE + 512 + 512


def chs(size: int) -> tuple:
    """CHS geometry of the footer, by the Microsoft VHD algorithm (rounding down)."""
    total = size // SECTOR
    total = min(total, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt
