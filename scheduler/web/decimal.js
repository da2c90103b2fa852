// Exact decimals for the view's coordinates and zoom: a value is m × 10^e with m a BigInt, so
// sums and products are exact at any depth (a float64 centre stops telling pixels apart near
// zoom 1e13). Only `divide` rounds, once, half to even, to a stated power of ten.

const FORM = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;
const MAX_EXPONENT = 100_000;  // far past any zoom the service accepts; bounds 10n ** e's cost

export class Decimal {
  constructor(m, e) {
    this.m = m;  // BigInt
    this.e = e;  // Number: the power of ten of m's last digit
  }

  // From a JSON number or a decimal string ("-0.75", "1e100", "2.5E-7"); a TypeError otherwise.
  static of(value) {
    if (value instanceof Decimal) return value;
    const text = typeof value === "number" ? String(value) : String(value ?? "").trim();
    const form = FORM.exec(text);
    if (!form || !(form[2] || form[3])) throw new TypeError(`${JSON.stringify(text)} is not a decimal number`);
    const [, sign, whole, fraction = "", exponent = "0"] = form;
    const e = Number(exponent) - fraction.length;
    if (!Number.isSafeInteger(e) || Math.abs(e) > MAX_EXPONENT) throw new TypeError(`${text} is out of range`);
    const m = BigInt((whole || "0") + fraction);
    return new Decimal(sign === "-" ? -m : m, e).normal();
  }

  // The same value with no trailing zeros in m (zero is 0 × 10^0).
  normal() {
    if (this.m === 0n) return new Decimal(0n, 0);
    let { m, e } = this;
    while (m % 10n === 0n) {
      m /= 10n;
      e += 1;
    }
    return new Decimal(m, e);
  }

  // m scaled so that its last digit is 10^e (e at most this.e: no digit is lost)
  at(e) {
    return this.m * 10n ** BigInt(this.e - e);
  }

  plus(other) {
    const b = Decimal.of(other);
    const e = Math.min(this.e, b.e);
    return new Decimal(this.at(e) + b.at(e), e).normal();
  }

  minus(other) {
    const b = Decimal.of(other);
    return this.plus(new Decimal(-b.m, b.e));
  }

  times(other) {
    const b = Decimal.of(other);
    return new Decimal(this.m * b.m, this.e + b.e).normal();
  }

  // this / other rounded half to even to a multiple of 10^e.
  divide(other, e) {
    const b = Decimal.of(other);
    if (b.m === 0n) throw new RangeError("division by zero");
    const shift = this.e - b.e - e;  // this/b = (this.m / b.m) × 10^(shift + e)
    let num = shift >= 0 ? this.m * 10n ** BigInt(shift) : this.m;
    let den = shift >= 0 ? b.m : b.m * 10n ** BigInt(-shift);
    if (den < 0n) [num, den] = [-num, -den];
    let q = num / den;  // truncated toward zero
    const r = num - q * den;
    const twice = 2n * (r < 0n ? -r : r);
    if (twice > den || (twice === den && q % 2n !== 0n)) q += r < 0n ? -1n : 1n;
    return new Decimal(q, e).normal();
  }

  // Rounded half to even to a multiple of 10^e.
  round(e) {
    return e <= this.e ? this : this.divide(new Decimal(1n, 0), e);
  }

  sign() {
    return this.m > 0n ? 1 : this.m < 0n ? -1 : 0;
  }

  // floor(log10 |this|): the power of ten of the leading digit (0 for zero).
  magnitude() {
    if (this.m === 0n) return 0;
    return (this.m < 0n ? -this.m : this.m).toString().length - 1 + this.e;
  }

  // The nearest float, for display and for layout, never for a coordinate sent to the service.
  toNumber() {
    return Number(this.toString());
  }

  // Plain digits where JavaScript's own numbers would write them so (1e-7 < |x| < 1e21),
  // scientific otherwise ("1.5e100"); both are what Python's Decimal and JSON parsers read.
  toString() {
    if (this.m === 0n) return "0";
    const sign = this.m < 0n ? "-" : "";
    const digits = (this.m < 0n ? -this.m : this.m).toString();
    const lead = digits.length + this.e;  // digits before the decimal point
    if (this.e >= 0 && lead <= 21) return sign + digits + "0".repeat(this.e);
    if (this.e < 0 && lead > -6) {
      if (lead > 0) return `${sign}${digits.slice(0, lead)}.${digits.slice(lead)}`;
      return `${sign}0.${"0".repeat(-lead)}${digits}`;
    }
    const mantissa = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${mantissa}e${lead - 1}`;
  }
}
